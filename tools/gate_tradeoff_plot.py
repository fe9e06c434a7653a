"""Issue 24's plot: quality vs encoder GFLOPs of the fixed exits, the gates and the oracle gate
of one parent on the same val images (tools/gate_tradeoff.sh calls it last).

    python tools/gate_tradeoff_plot.py RUN/sweeps/NAME/sweep.json ORACLE_REPORT.json ... --out FILE.png \
        [--exit2-sweep RUN/sweeps/NAME-exit2/sweep.json]

Reads only the sweep's rows (fixed exits, full depth, gates; their 90% intervals), the gate
rows of an exit-2 gates' sweep of the same images (``adaseg sweep --features exit2``) and the
oracle eval reports (``adaseg eval --gate oracle --beta B``); prints the points as a table and
writes the figure. The oracle bounds what any gate on this parent can reach; the gap between
the gates and the oracle is the gate's prediction, the gap between the oracle and full depth
the parent's exits.

Encoder GFLOPs are counted on the first ``--flops-images`` images of each point (the sweep's
and the plot's x axis), while every point's mean exit covers all evaluated images. Without
pausing, encoder GFLOPs are linear in the layers run (checked here on the fixed exits), so the
table also gives the saving over all images, ``1 - mean exit / depth``, and the mean exit of
the FLOP subset, ``GFLOPs / (full-depth GFLOPs / depth)``: their difference says how
representative the FLOP subset is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _points(sweep: dict, oracle_paths: list[str], exit2_sweep: dict | None = None) -> dict[str, list[tuple]]:
    """{curve: [(label, encoder GFLOPs, quality, lo, hi, mean exit over all images)]} sorted by
    GFLOPs."""
    curves: dict[str, list[tuple]] = {"fixed exits": [], "gate": [], "exit-2 gate": [], "oracle": []}
    if exit2_sweep is not None:
        full = [r["report"] for r in sweep["rows"] if r["kind"] == "full"]
        if full != [r["report"] for r in exit2_sweep["rows"] if r["kind"] == "full"]:
            sys.exit("Error: --exit2-sweep must share the sweep's full-depth report (one parent, the same images)")
        for r in exit2_sweep["rows"]:
            if r["kind"] == "gate":
                curves["exit-2 gate"].append((f"beta {r['beta']}", r["gflops_encoder_mean"], r["quality"],
                                              r["quality_lo"], r["quality_hi"], r["exit_mean"]))
    for r in sweep["rows"]:
        if r["kind"] in ("exit", "full"):
            label = f"exit {r['exit']}" if r["kind"] == "exit" else "full"
            curves["fixed exits"].append((label, r["gflops_encoder_mean"], r["quality"], r["quality_lo"], r["quality_hi"],
                                          r["exit_mean"]))
        elif r["kind"] == "gate":
            curves["gate"].append((f"beta {r['beta']}", r["gflops_encoder_mean"], r["quality"], r["quality_lo"],
                                   r["quality_hi"], r["exit_mean"]))
    metric = sweep["rows"][0]["quality_metric"]
    for path in oracle_paths:
        rep = json.loads(Path(path).read_text())
        beta = rep["settings"].get("oracle_beta")
        if beta is None:
            sys.exit(f"Error: {path} is not an oracle report (adaseg eval --gate oracle --beta B)")
        curves["oracle"].append((f"beta {beta}", rep["gflops"]["gflops"]["encoder"]["mean"], rep["metrics"][metric],
                                 None, None, rep["exits"]["mean"]))
    return {k: sorted(v, key=lambda p: p[1]) for k, v in curves.items()}, metric


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep")
    parser.add_argument("oracles", nargs="*")
    parser.add_argument("--out", required=True)
    parser.add_argument("--exit2-sweep", default=None, help="sweep.json of the exit-2 gates (same images)")
    args = parser.parse_args()
    sweep = json.loads(Path(args.sweep).read_text())
    exit2 = None if args.exit2_sweep is None else json.loads(Path(args.exit2_sweep).read_text())
    curves, metric = _points(sweep, args.oracles, exit2)
    full = [p for p in curves["fixed exits"] if p[0] == "full"][0]
    depth = full[5]
    per_layer = full[1] / depth
    worst = max(abs(g / per_layer - e) for _, g, _, _, _, e in curves["fixed exits"])
    print(f"encoder GFLOPs per layer {per_layer:.6f} (full depth / {depth:g}); fixed exits off linear by at most "
          f"{worst:.2g} layers")
    print("saving: encoder GFLOPs of the FLOP subset vs full depth; saving (all): 1 - mean exit over all images / "
          "depth; exit (FLOPs): the FLOP subset's mean exit")
    print(f"{'curve':<12} {'point':<14} {'enc GFLOPs':>10} {'saving':>7} {'exit (FLOPs)':>12} {'mean exit':>9} "
          f"{'saving (all)':>12} {metric:>7}  {'90% interval':>16}")
    for name, pts in curves.items():
        for label, g, q, lo, hi, e in pts:
            iv = "" if lo is None else f"[{100 * lo:.2f}, {100 * hi:.2f}]"
            print(f"{name:<12} {label:<14} {g:10.4f} {100 * (1 - g / full[1]):6.1f}% {g / per_layer:12.3f} {e:9.3f} "
                  f"{100 * (1 - e / depth):11.1f}% {100 * q:7.2f}  {iv:>16}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    style = {"fixed exits": ("o-", "tab:gray"), "gate": ("s-", "tab:blue"), "exit-2 gate": ("D-", "tab:orange"),
             "oracle": ("^--", "tab:green")}
    for name, pts in curves.items():
        if not pts:
            continue
        fmt, colour = style[name]
        xs, ys = [p[1] for p in pts], [100 * p[2] for p in pts]
        ax.plot(xs, ys, fmt, color=colour, label=name)
        for label, g, q, lo, hi, _ in pts:
            if lo is not None:
                ax.plot([g, g], [100 * lo, 100 * hi], "-", color=colour, alpha=0.5)
    ax.set_xlabel("encoder GFLOPs / image (FLOP-counted images)")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title("Fixed exits, gates and oracle gate (same val images)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
