"""The sweep's figures (matplotlib, Agg backend): quality vs encoder GFLOPs and vs images/s,
and the gate's exits per beta (ECO-M2F Fig. 2 style). Each figure is built from the rows of
``sweep.json`` only, so every plotted number is in the JSON/CSV too.

Series (line labels, which tests read back): ``fixed exits`` (the static curve, joined),
``gate``, ``pause (entropy)`` / ``pause (random)`` (each mode joined along its Pareto front),
``gate + pause``, ``oracle gate (bound)`` (``sweep --oracle``, joined), ``Pareto front``
(hollow rings around the front's points) and ``full depth`` (a star). Quality is in percent; a point with a bootstrap interval has a vertical bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

AXES = {"gflops": ("gflops_encoder_mean", "on_front_gflops", "encoder GFLOPs per image (mean)"),
        "ips": ("images_per_s", "on_front_ips", "images/s")}


def _figure(**kwargs):
    # Figure objects directly (not pyplot): no global state, no display backend needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _pct(v) -> float:
    return float("nan") if v is None else 100.0 * float(v)


def _series(ax, rows: Sequence[dict], x_key: str, label: str, *, joined: bool, marker: str, order=None,
            **style) -> None:
    """One labelled line (``joined``) or marker set, with interval bars; points joined in
    ``order`` (default: along the x axis)."""
    if not rows:
        return
    rows = sorted(rows, key=order or (lambda r: r[x_key]))
    x = np.array([r[x_key] for r in rows], dtype=float)
    y = np.array([_pct(r["quality"]) for r in rows])
    lo = np.array([_pct(r.get("quality_lo")) for r in rows])
    hi = np.array([_pct(r.get("quality_hi")) for r in rows])
    ax.plot(x, y, marker=marker, linestyle="-" if joined else "none", label=label, **style)
    has = np.isfinite(lo) & np.isfinite(hi)
    if has.any():
        # (2, n) array; clipped at 0: float rounding can put an end a hair inside the estimate
        yerr = np.clip(np.vstack([y[has] - lo[has], hi[has] - y[has]]), 0.0, None)
        ax.errorbar(x[has], y[has], yerr=yerr, fmt="none", capsize=2,
                    ecolor=style.get("color", "0.4"), alpha=0.6)


def quality_figure(rows: Sequence[dict], axis: str, *, title: str = ""):
    """Quality vs ``axis`` (``gflops`` or ``ips``) with every series of the module docstring."""
    from adaseg.analysis.pareto import pareto_front

    x_key, front_key, x_label = AXES[axis]
    fig = _figure(figsize=(7.0, 4.8), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    fixed = [r for r in rows if r["kind"] in ("exit", "full")]
    # joined exit after exit (images/s need not fall with every exit: it is measured, noisy)
    _series(ax, fixed, x_key, "fixed exits", joined=True, marker="o", color="tab:gray",
            order=lambda r: r["exit"] or float("inf"))
    for r in fixed:
        ax.annotate(f"{r['exit'] or 'full'}", (r[x_key], _pct(r["quality"])), textcoords="offset points",
                    xytext=(3, -10), fontsize=7, color="tab:gray")
    gates = [r for r in rows if r["kind"] == "gate"]
    _series(ax, gates, x_key, "gate", joined=False, marker="D", color="tab:blue")
    for i, r in enumerate(sorted(gates, key=lambda r: r["beta"])):
        # staggered: gates of nearby betas sit close together
        ax.annotate(f"β={r['beta']:g}", (r[x_key], _pct(r["quality"])), textcoords="offset points",
                    xytext=(4, 4 - 9 * (i % 3)), fontsize=7, color="tab:blue")
    for mode, color in (("entropy", "tab:green"), ("random", "tab:red")):
        pts = [r for r in rows if r["kind"] == "pause" and r["pause_mode"] == mode]
        if not pts:
            continue
        # joined along the mode's own front (its best configurations), all points shown
        cost = [r[x_key] for r in pts]
        on = pareto_front(cost, [np.nan if r["quality"] is None else r["quality"] for r in pts],
                          cost_lower_is_better=axis == "gflops")
        _series(ax, [r for r, f in zip(pts, on) if f], x_key, f"pause ({mode})", joined=True, marker="s", color=color)
        off = [r for r, f in zip(pts, on) if not f]
        _series(ax, off, x_key, f"pause ({mode}), off its front", joined=False, marker="s", color=color, alpha=0.35)
    oracle = [r for r in rows if r["kind"] == "oracle"]
    _series(ax, oracle, x_key, "oracle gate (bound)", joined=True, marker="P", color="tab:orange")
    combos = [r for r in rows if r["kind"] == "gate+pause"]
    _series(ax, combos, x_key, "gate + pause", joined=False, marker="^", color="tab:purple")
    front = sorted((r for r in rows if r[front_key]), key=lambda r: r[x_key])
    if front:
        ax.plot([r[x_key] for r in front], [_pct(r["quality"]) for r in front], linestyle="none", marker="o",
                markersize=13, markerfacecolor="none", markeredgecolor="black", label="Pareto front")
    full = [r for r in rows if r["kind"] == "full"]
    if full:
        ax.plot([full[0][x_key]], [_pct(full[0]["quality"])], linestyle="none", marker="*", markersize=14,
                color="gold", markeredgecolor="black", label="full depth")
    metric = rows[0]["quality_metric"] if rows else "quality"
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"{metric} (%)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def exits_figure(rows: Sequence[dict], *, depth: int):
    """The gate's exits per beta: for each gate point, the share of images at each exit
    (grouped bars, one colour per beta), as ECO-M2F's Fig. 2 shows how beta moves exits."""
    fig = _figure(figsize=(6.4, 4.0), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    gates = sorted((r for r in rows if r["kind"] == "gate"), key=lambda r: r["beta"])
    exits = np.arange(1, depth + 1)
    width = 0.8 / max(len(gates), 1)
    for i, r in enumerate(gates):
        n = sum(r["exits_histogram"].values())
        share = np.array([r["exits_histogram"].get(str(e), 0) / n for e in exits]) if n else np.zeros(len(exits))
        ax.bar(exits + (i - (len(gates) - 1) / 2) * width, 100 * share, width=width, label=f"β={r['beta']:g}")
    ax.set_xticks(exits)
    ax.set_xlabel("exit (encoder layers run)")
    ax.set_ylabel("images (%)")
    ax.set_title("gate exits per β", fontsize=9)
    if gates:
        ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def save_figure(fig, directory: Path, stem: str) -> list[Path]:
    """``stem.png`` and ``stem.svg`` in ``directory``."""
    paths = []
    for ext in ("png", "svg"):
        path = directory / f"{stem}.{ext}"
        fig.savefig(path, format=ext)
        paths.append(path)
    return paths


def write_plots(rows: Sequence[dict], directory: Path, *, depth: int, title: str = "") -> list[Path]:
    """Every figure of the sweep into ``directory``; the paths written."""
    paths = save_figure(quality_figure(rows, "gflops", title=title), directory, "quality_vs_gflops")
    paths += save_figure(quality_figure(rows, "ips", title=title), directory, "quality_vs_ips")
    if any(r["kind"] == "gate" for r in rows):
        paths += save_figure(exits_figure(rows, depth=depth), directory, "gate_exits")
    return paths
