"""Per exit: dataset AP / AP50 vs mean per-image box F1 (IoU .5, score >= .5) vs mean per-image AP50."""
import sys, shutil, tempfile, os, math, contextlib, io, torch
from collections import defaultdict
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import *
from adaseg.runs.parent import load_model_weights
from adaseg.eval.box_ap import image_f1_parts, image_ap_parts
path, n = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)
tmp = tempfile.mkdtemp(); p2 = os.path.join(tmp, "c.safetensors"); shutil.copy(path, p2)
j = path[:-len(".safetensors")] + ".json"
if os.path.exists(j): shutil.copy(j, p2[:-len(".safetensors")] + ".json")
model = create_model("detr_tiny"); load_model_weights(model, p2, expect_model="detr_tiny")
ds = build_dataset("synthetic", "val", train=False)
print(f"{path} on {n} val images")
print("exit | AP_box | AP50_box | mean img F1 (defined n) | mean img AP50 (defined n)")
for e in (2, 3, 4, 5, 6):
    gt, res = gt_and_results(model, ds, list(range(n)), exit=e)
    with contextlib.redirect_stdout(io.StringIO()):
        r = box_ap(gt, res)
    g, d = defaultdict(list), defaultdict(list)
    for a in gt["annotations"]: g[a["image_id"]].append(a)
    for x in res: d[x["image_id"]].append(x)
    f1s, aps = [], []
    for im in gt["images"]:
        i = im["id"]
        p = image_f1_parts(g[i], d[i])
        if p: f1s.append(sum(2*tp/(2*tp+fp+fn) for tp, fp, fn in p.values()) / len(p))
        q = image_ap_parts(g[i], d[i])
        if q: aps.append(sum(q.values()) / len(q))
    print(f"{e} | {100*r['AP']:.2f} | {100*r['AP50']:.2f} | {100*sum(f1s)/max(len(f1s),1):.2f} ({len(f1s)}) | {100*sum(aps)/max(len(aps),1):.2f} ({len(aps)})", flush=True)
