"""Issue 22's README table (PAUMER App. I/J on the built-in data): per Table-1 configuration,
Segmenter-PAUMER vs its early exit vs SETR-PAUMER -- mIoU, GFLOPs per image, and the mIoU
differences with paired 90% bootstrap intervals over the same images (1000 resamples, seed 0:
adaseg.eval.bootstrap.bootstrap_many over the reports' per-image parts, as ``adaseg compare``
does; compare itself pairs settings of one parent only, so the SETR column is computed here,
after checking that both reports scored the same image ids and categories).

Run from the folder holding the runs ``seg`` and ``setr`` after the README's sweeps:
``python table.py > table.md``.
"""
import json
import sys

import numpy as np

from adaseg.eval.bootstrap import bootstrap_many
from adaseg.eval.image_parts import load_parts


def rows(path):
    return {r["pause"]: r for r in json.load(open(path))["rows"]}


def paired(base_report, other_report):
    base, other = load_parts(base_report, require_hash=True), load_parts(other_report, require_hash=True)
    if not (np.array_equal(base.image_ids, other.image_ids) and np.array_equal(base.category_ids, other.category_ids)):
        sys.exit(f"{other_report} and {base_report} scored other images or categories")

    def diff(idx):
        return [other.metrics(idx, keys=("mIoU",))["mIoU"] - base.metrics(idx, keys=("mIoU",))["mIoU"]]

    (iv,) = bootstrap_many(diff, base.num_images, n_boot=1000, seed=0, level=0.90)
    full = other.metrics(keys=("mIoU",))["mIoU"] - base.metrics(keys=("mIoU",))["mIoU"]
    return f"{100 * full:+.2f} [{100 * iv.lo:+.2f}, {100 * iv.hi:+.2f}]"


seg, ee, setr = (rows("seg/sweeps/table1/sweep.json"), rows("seg/sweeps/table1_earlyexit/sweep.json"),
                 rows("setr/sweeps/table1/sweep.json"))
print("| pause plan (Table 1, layers 3/5/7 -> 2/3/4) | Segmenter-PAUMER mIoU | GFLOPs | early exit mIoU | GFLOPs "
      "| early exit - PAUMER | SETR-PAUMER mIoU | GFLOPs | SETR - Segmenter |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for p in [None] + [p for p in seg if p is not None]:
    s, t, e = seg[p], setr[p], ee[p]
    early = ("-", "-", "-") if p is None else (f"{100 * e['mIoU']:.2f}", f"{e['gflops_total_mean']:.4f}",
                                             paired("seg/" + s["report"], "seg/" + e["report"]))
    print(f"| {p or 'none (full depth)'} | {100 * s['mIoU']:.2f} | {s['gflops_total_mean']:.4f} | "
          + " | ".join(early)
          + f" | {100 * t['mIoU']:.2f} | {t['gflops_total_mean']:.4f} | {paired('seg/' + s['report'], 'setr/' + t['report'])} |")
