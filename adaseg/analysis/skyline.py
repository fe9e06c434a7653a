"""Skylines of several sweeps in one view (PAUMER App. J, Figure 12): for each sweep (a
method: Segmenter-PAUMER, its early exit, SETR-PAUMER, ...), the best quality reachable at
each cost across its operating points, drawn and tabulated side by side.

A sweep's skyline is its Pareto front (:func:`adaseg.analysis.pareto.pareto_front`) on one
axis: total GFLOPs per image (fewer is better) or images/s (more is better). As a
curve it is a step function: at a GFLOPs budget g, the best point costing at most g; at a
throughput t, the best point at least that fast. Reads only sweep files
(``sweeps/NAME/sweep.json``); no model runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from adaseg.analysis.pareto import pareto_front

__all__ = ["AXES", "SkylineError", "Series", "read_series", "skyline_rows", "skyline_figure", "skyline_json"]

# axis -> (row key of the cost, lower cost is better, axis label)
AXES = {"gflops": ("gflops_total_mean", True, "GFLOPs per image (total, 2 x multiply-adds)"),
        "ips": ("images_per_s", False, "images/s")}


class SkylineError(ValueError):
    """A sweep file cannot be read or the sweeps cannot be put side by side."""


@dataclass
class Series:
    """One sweep: its ``label`` and its rows (``sweep.json``'s ``rows``)."""

    label: str
    path: Path
    rows: list[dict[str, Any]]

    @property
    def metric(self) -> str:
        return self.rows[0]["quality_metric"]


def read_series(path: str | Path, label: str) -> Series:
    """The sweep at ``path`` (a ``sweeps/NAME`` folder or its ``sweep.json``)."""
    p = Path(path)
    file = p / "sweep.json" if p.is_dir() else p
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise SkylineError(f"{file}: no such sweep file (adaseg sweep writes sweeps/NAME/sweep.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SkylineError(f"{file}: not a sweep file ({exc})") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and "quality" in r for r in rows):
        raise SkylineError(f"{file}: not a sweep file (no operating points)")
    return Series(label=label, path=file, rows=rows)


def check_comparable(series: Sequence[Series]) -> None:
    """Refuse sweeps of different quality metrics or image sets (their skylines would not be
    on one scale)."""
    metrics = {s.metric for s in series}
    if len(metrics) > 1:
        raise SkylineError(f"the sweeps report different quality metrics ({', '.join(sorted(metrics))})")
    images = {s.label: s.rows[0].get("images") for s in series}
    if len(set(images.values())) > 1:
        raise SkylineError(f"the sweeps scored different numbers of images: {images}")


def skyline_rows(rows: Sequence[dict], axis: str) -> list[dict]:
    """The rows on the skyline for ``axis``, cheapest (GFLOPs) or fastest (images/s) first."""
    key, lower, _ = AXES[axis]
    cost = [float("nan") if r.get(key) is None else float(r[key]) for r in rows]
    quality = [float("nan") if r.get("quality") is None else float(r["quality"]) for r in rows]
    front = pareto_front(cost, quality, cost_lower_is_better=lower)
    on = [r for r, f in zip(rows, front) if f]
    return sorted(on, key=lambda r: r[key] if lower else -r[key])


def _pct(v) -> float:
    return float("nan") if v is None else 100.0 * float(v)


def skyline_figure(series: Sequence[Series], axis: str, *, title: str = ""):
    """Every sweep's points (markers, 90% intervals where the sweep has them) and its
    skyline as a step line, quality (%) against ``axis``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    key, lower, x_label = AXES[axis]
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    markers = "osD^v<>"
    for i, s in enumerate(series):
        colour = f"C{i}"
        x = np.array([np.nan if r.get(key) is None else r[key] for r in s.rows], dtype=float)
        y = np.array([_pct(r["quality"]) for r in s.rows])
        ax.plot(x, y, marker=markers[i % len(markers)], linestyle="none", color=colour, alpha=0.55)
        lo = np.array([_pct(r.get("quality_lo")) for r in s.rows])
        hi = np.array([_pct(r.get("quality_hi")) for r in s.rows])
        has = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(x)
        if has.any():
            yerr = np.clip(np.vstack([y[has] - lo[has], hi[has] - y[has]]), 0.0, None)
            ax.errorbar(x[has], y[has], yerr=yerr, fmt="none", ecolor=colour, alpha=0.35, capsize=2)
        sky = skyline_rows(s.rows, axis)
        sx = [r[key] for r in sky]
        sy = [_pct(r["quality"]) for r in sky]
        # GFLOPs: the best point costing at most x (steps up after each point); images/s: the
        # best point at least as fast as x (points sorted fastest first, steps up leftwards)
        ax.step(sx, sy, where="post", color=colour, label=f"{s.label} (skyline)")
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"{series[0].metric} (%)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def skyline_json(series: Sequence[Series]) -> dict[str, Any]:
    """Per sweep and axis, the skyline's points: ``point``, ``pause``, quality with its
    interval, GFLOPs and images/s."""
    out: dict[str, Any] = {"metric": series[0].metric, "series": []}
    for s in series:
        entry = {"label": s.label, "sweep": str(s.path), "skyline": {}}
        for axis in AXES:
            entry["skyline"][axis] = [
                {"point": r.get("point"), "pause": r.get("pause"), "report": r.get("report"),
                 "quality": r["quality"], "quality_lo": r.get("quality_lo"), "quality_hi": r.get("quality_hi"),
                 "gflops_total_mean": r.get("gflops_total_mean"), "images_per_s": r.get("images_per_s")}
                for r in skyline_rows(s.rows, axis)]
        out["series"].append(entry)
    return out
