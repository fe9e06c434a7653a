"""Step B's per-image quality (box AP50 of the image) vs dataset box AP, across parents and exits.

For each checkpoint (detr_tiny train-parent checkpoints, any training stage) and each exit 2..6:
dataset AP_box / AP50_box (pycocotools) and the mean over images of the per-image AP50
(adaseg.eval.box_ap.image_ap_parts, what derive records), on the first N built-in val images;
then the Pearson and Spearman correlations of the mean per-image AP50 with AP50_box and AP_box
over all (checkpoint, exit) rows. Usage:
  python results/detr-table7-2026-12-05/relation_across.py N CKPT [CKPT ...]
"""
import contextlib
import io
import os
import shutil
import sys
import tempfile
from collections import defaultdict

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "detr-2026-12-05"))
from common import box_ap, build_dataset, create_model, gt_and_results  # noqa: E402
from adaseg.eval.box_ap import image_ap_parts  # noqa: E402
from adaseg.runs.parent import load_model_weights  # noqa: E402

n, paths = int(sys.argv[1]), sys.argv[2:]
torch.set_num_threads(1)
ds = build_dataset("synthetic", "val", train=False)
rows = []
print(f"first {n} built-in val images; AP in %")
print("| checkpoint | exit | AP_box | AP50_box | mean image AP50 (images with boxes) |")
print("|---|---|---|---|---|")
for path in paths:
    tmp = tempfile.mkdtemp()
    p2 = os.path.join(tmp, "c.safetensors")
    shutil.copy(path, p2)
    side = path[:-len(".safetensors")] + ".json"
    if os.path.exists(side):
        shutil.copy(side, p2[:-len(".safetensors")] + ".json")
    model = create_model("detr_tiny")
    load_model_weights(model, p2, expect_model="detr_tiny")
    for e in (2, 3, 4, 5, 6):
        gt, res = gt_and_results(model, ds, list(range(n)), exit=e)
        with contextlib.redirect_stdout(io.StringIO()):
            r = box_ap(gt, res)
        g, d = defaultdict(list), defaultdict(list)
        for a in gt["annotations"]:
            g[a["image_id"]].append(a)
        for x in res:
            d[x["image_id"]].append(x)
        aps = [sum(q.values()) / len(q) for q in (image_ap_parts(g[im["id"]], d[im["id"]]) for im in gt["images"]) if q]
        rows.append((100 * r["AP"], 100 * r["AP50"], 100 * float(np.mean(aps))))
        print(f"| {path} | {e} | {rows[-1][0]:.2f} | {rows[-1][1]:.2f} | {rows[-1][2]:.2f} ({len(aps)}) |", flush=True)
    shutil.rmtree(tmp)
a = np.array(rows)
for j, name in ((1, "AP50_box"), (0, "AP_box")):
    print(f"mean image AP50 vs {name} over {len(a)} rows: Pearson {pearsonr(a[:, 2], a[:, j])[0]:+.3f}, "
          f"Spearman {spearmanr(a[:, 2], a[:, j])[0]:+.3f}")
