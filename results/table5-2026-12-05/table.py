"""The Table 5 analog (issue 24) from the `adaseg compare --json` outputs in this folder.

Reads ``compare_wsd_vs_pause_<exit>.json`` (baseline: the pause parent, other: wsd+pause) and
``compare_distill_vs_wsd_<exit>.json`` (baseline: wsd+pause, other: wsd+pause --distill) for
exits 2..5 and full depth (an exit without them is printed as not measured), and prints a Markdown table: PQ (%) of each parent at each exit,
encoder GFLOPs/image, and the paired differences with their 90% bootstrap intervals.
Usage: ``python table.py [FOLDER] > table.md`` (FOLDER: where the compare outputs are; default
this folder; ``results/table5-500it-2026-12-05`` uses it too).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(__file__).resolve().parent
EXITS = ["2", "3", "4", "5", "full"]


def rows_of(path: Path) -> dict[str, dict]:
    """{metric: row} of the one compared report in a compare --json output."""
    data = json.loads(path.read_text())
    if len(data["reports"]) != 1:
        raise SystemExit(f"{path}: expected one compared report, got {len(data['reports'])}")
    return {r["metric"]: r for r in data["rows"]}, data


def diff(row: dict, scale: float = 100.0) -> str:
    d = row["difference"]
    return f"{d['estimate'] * scale:+.2f} [{d['lo'] * scale:+.2f}, {d['hi'] * scale:+.2f}]"


def main() -> None:
    print("| exit | enc. GFLOPs | PQ pause | PQ wsd+pause | PQ wsd+pause+distill | "
          "PQ: wsd+pause - pause | PQ: distill - wsd+pause | mIoU: wsd+pause - pause | mIoU: distill - wsd+pause |")
    print("|---|---|---|---|---|---|---|---|---|")
    images = set()
    for k in EXITS:
        if not (HERE / f"compare_wsd_vs_pause_{k}.json").exists():
            print(f"| {k} | | not measured | | | | | | |")
            continue
        a, da = rows_of(HERE / f"compare_wsd_vs_pause_{k}.json")
        b, db = rows_of(HERE / f"compare_distill_vs_wsd_{k}.json")
        images |= {da["images"], db["images"]}
        if abs(a["PQ"]["value"] - b["PQ"]["baseline"]) > 1e-12:
            raise SystemExit(f"exit {k}: the wsd+pause report differs between the two comparisons")
        gf = a["gflops_encoder_mean"]["value"]
        print(f"| {k} | {gf:.4f} | {a['PQ']['baseline'] * 100:.2f} | {a['PQ']['value'] * 100:.2f} | "
              f"{b['PQ']['value'] * 100:.2f} | {diff(a['PQ'])} | {diff(b['PQ'])} | {diff(a['mIoU'])} | "
              f"{diff(b['mIoU'])} |")
    print()
    print(f"Images: {sorted(images)}; differences: paired bootstrap, "
          f"{da['n_boot']} resamples, level {da['level']}, seed {da['seed']}; PQ and mIoU in percent points.")


if __name__ == "__main__":
    main()
