"""Evaluate a train-parent checkpoint of detr_tiny: box AP on the first N val images at exits."""
import sys, shutil, tempfile, os, torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *
from adaseg.runs.parent import load_model_weights
path, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 100
exits = [int(e) for e in sys.argv[3].split(",")] if len(sys.argv) > 3 else [6, 2]
torch.set_num_threads(1)
tmp = tempfile.mkdtemp(); p2 = os.path.join(tmp, "c.safetensors")
shutil.copy(path, p2); shutil.copy(path[:-len(".safetensors")] + ".json", p2[:-len(".safetensors")] + ".json") if os.path.exists(path[:-len(".safetensors")] + ".json") else None
model = create_model("detr_tiny")
meta = load_model_weights(model, p2, expect_model="detr_tiny")
ds = build_dataset("synthetic", "val", train=False)
out = []
for e in exits:
    a, a50 = ap(model, ds, list(range(n)), exit=e)
    out.append(f"exit{e} AP {100*a:.2f} AP50 {100*a50:.2f}")
print(path, getattr(meta, "extra", {}).get("iteration", ""), " | ".join(out), flush=True)
