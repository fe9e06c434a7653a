"""Issue 24: one gate curve against another at equal encoder GFLOPs, paired over images.

    python tools/gate_vs_gate.py RUN/sweeps/A/sweep.json RUN/sweeps/B/sweep.json [--bootstrap 1000]

A and B are two sweeps of one parent on the same val images (``adaseg sweep --features
backbone`` and ``--features exit2``, say). For each gate point of B the statistic is its
quality minus A's gate curve at B's encoder GFLOPs: A's gate points joined piecewise linearly
and closed by full depth (the curve's common end), exactly as the sweep's own "adaptive
advantage" reads the fixed-exit curve (adaseg.analysis.sweep_stats.advantage: one resample of
image indices recomputes every point's dataset-level metric and mean encoder GFLOPs, no
extrapolation outside the curve's cost range). Positive: B's gate is better than A's at the
same compute. Prints one line per B gate point.

Encoder GFLOPs come from each report's FLOP-counted images (``--flops-images``): with a FLOP
subset smaller than the evaluated images the x positions carry that subset's sampling error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _gate_rows(sweep: dict) -> tuple[list[dict], dict]:
    rows = sweep["rows"]
    full = [r for r in rows if r["kind"] == "full"]
    if len(full) != 1:
        sys.exit("Error: a sweep needs its full-depth point (the curve's common end)")
    return [r for r in rows if r["kind"] == "gate"], full[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curve_sweep", help="sweep.json whose gates form the curve (A)")
    parser.add_argument("point_sweep", help="sweep.json whose gates are compared with it (B)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from adaseg.analysis.sweep_stats import advantage
    from adaseg.eval.bootstrap import check_comparable
    from adaseg.eval.image_parts import load_parts

    paths = [Path(args.curve_sweep), Path(args.point_sweep)]
    sweeps = [json.loads(p.read_text()) for p in paths]
    roots = [p.parent.parent.parent for p in paths]  # RUN/sweeps/NAME/sweep.json -> RUN
    (a_gates, a_full), (b_gates, b_full) = (_gate_rows(s) for s in sweeps)
    if a_full["report"] != b_full["report"] or roots[0] != roots[1]:
        sys.exit("Error: the two sweeps must share their full-depth report (one parent, the same images)")
    if not a_gates or not b_gates:
        sys.exit("Error: each sweep needs gate points (--betas)")
    load = lambda root, row: load_parts(root / row["report"])  # noqa: E731
    full = load(roots[0], a_full)
    curve = [load(roots[0], r) for r in a_gates]
    key = a_full["quality_metric"]
    for r, parts in zip(a_gates, curve):
        check_comparable(full, parts, name=r["report"], baseline_name=a_full["report"])
    print(f"{key} of each gate of {paths[1].parent.name} minus the gate curve of {paths[0].parent.name} "
          f"(closed by full depth) at its encoder GFLOPs; paired bootstrap, {args.bootstrap} resamples, "
          f"{100 * args.level:g}%")
    for r in sorted(b_gates, key=lambda r: r["gflops_encoder_mean"]):
        point = load(roots[1], r)
        check_comparable(full, point, name=r["report"], baseline_name=a_full["report"])
        adv = advantage(point, curve, key, front=False, anchor=full, n_boot=args.bootstrap, seed=args.seed,
                        level=args.level)
        saving = 1 - r["gflops_encoder_mean"] / a_full["gflops_encoder_mean"]
        if adv.get("estimate") is None:
            text = f"undefined ({adv['undefined']})"
        else:
            text = f"{100 * adv['estimate']:+.2f} [{100 * adv['lo']:+.2f}, {100 * adv['hi']:+.2f}]"
        print(f"{r['point']:<22} enc GFLOPs {r['gflops_encoder_mean']:.4f} ({100 * saving:4.1f}% saving) "
              f"{key} {100 * r['quality']:.2f}  vs curve: {text}")


if __name__ == "__main__":
    main()
