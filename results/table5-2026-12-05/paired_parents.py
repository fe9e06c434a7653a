"""Paired bootstrap of two parents' eval reports on the same images (issue 24's Table 5 analog).

`adaseg compare` refuses reports of two parents (it compares settings of one parent); the pairing
by image is still valid across parents, so this script applies the same machinery
(:func:`adaseg.eval.bootstrap.bootstrap_many`, the reports' verified per-image parts) after the
other checks of ``check_comparable`` (metric, image ids and order, categories), and writes rows in
`adaseg compare --json`'s form. Usage:
``python paired_parents.py BASELINE_REPORT OTHER_REPORT OUT.json [--bootstrap 1000]``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from adaseg.eval.bootstrap import bootstrap_many
from adaseg.eval.image_parts import load_parts

KEYS = ("PQ", "mIoU", "gflops_encoder_mean")


def main(argv: list[str]) -> None:
    base_path, other_path, out = argv[0], argv[1], argv[2]
    n_boot = int(argv[4]) if len(argv) > 4 and argv[3] == "--bootstrap" else 1000
    base = load_parts(Path(base_path), require_hash=True)
    other = load_parts(Path(other_path), require_hash=True)
    if other.metric != base.metric or not np.array_equal(other.image_ids, base.image_ids) \
            or not np.array_equal(other.category_ids, base.category_ids):
        raise SystemExit(f"{other_path} and {base_path} were not scored on the same images/categories/metric")

    def differences(idx):
        b, o = base.metrics(idx, keys=KEYS), other.metrics(idx, keys=KEYS)
        return [math.nan if b[k] is None or o[k] is None else o[k] - b[k] for k in KEYS]

    intervals = bootstrap_many(differences, base.num_images, n_boot=n_boot, seed=0, level=0.9)
    b_full, o_full = base.metrics(keys=KEYS), other.metrics(keys=KEYS)
    rows = [{"metric": k, "baseline": b_full[k], "value": o_full[k], "difference": iv.to_json(), "other": 0,
             "report": other_path} for k, iv in zip(KEYS, intervals)]
    Path(out).write_text(json.dumps({"baseline": base_path, "reports": [other_path], "images": base.num_images,
                                     "n_boot": n_boot, "seed": 0, "level": 0.9, "metrics": list(KEYS),
                                     "rows": rows}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
