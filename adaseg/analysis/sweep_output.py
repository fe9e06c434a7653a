"""Writing a sweep: ``R/sweeps/<name>/`` with ``sweep.json``, ``sweep.csv`` and the plots, all
at once (:func:`adaseg.storage.atomic.atomic_dir`: the directory is the complete old one or
the complete new one, never half of either)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from adaseg.storage.atomic import atomic_dir
from adaseg.analysis.sweep import QUALITY_KEYS

# Every row field but the histogram dict, flattened; ``<metric>_lo/_hi``: its 90% interval.
CSV_COLUMNS = ("point", "kind", "origin", "exit", "beta", "pause", "pause_mode", "images", "quality_metric", "quality",
               "quality_lo", "quality_hi", "quality_sd",
               *(f"{k}{s}" for k in QUALITY_KEYS for s in ("", "_lo", "_hi")),
               "gflops_encoder_mean", "gflops_encoder_lo", "gflops_encoder_hi", "gflops_total_mean", "images_per_s",
               "exit_mean", "exits_histogram", "on_front_gflops", "on_front_ips", "reused", "report", "eval")


def csv_text(rows: list[dict[str, Any]]) -> str:
    """One line per point; the exit histogram as ``exit:count`` pairs; empty for None."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        flat = {k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS}
        flat["exits_histogram"] = " ".join(f"{k}:{v}" for k, v in r["exits_histogram"].items())
        writer.writerow(flat)
    return buf.getvalue()


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a ``sweep.csv`` (strings, as written)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_sweep(directory: Path, data: dict[str, Any], *, depth: int, title: str = "") -> list[Path]:
    """Write the sweep's files into ``directory`` (replacing a previous sweep of that name)."""
    from adaseg.analysis.sweep_plot import write_plots

    with atomic_dir(directory) as tmp:
        (tmp / "sweep.json").write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")
        (tmp / "sweep.csv").write_text(csv_text(data["rows"]))
        plots = write_plots(data["rows"], tmp, depth=depth, title=title)
    return [directory / "sweep.json", directory / "sweep.csv", *(directory / p.name for p in plots)]
