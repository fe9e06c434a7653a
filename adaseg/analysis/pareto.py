"""Operating points compared by cost and quality: the Pareto front, a static curve
interpolated at a cost, and the best point within a budget. Plain numpy, no I/O.

A point is (cost, quality). ``cost_lower_is_better`` says which way the cost axis points:
True for GFLOPs (fewer is better), False for images/s (more is better). Quality is always
higher-is-better (PQ, mIoU).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pareto_front(cost: Sequence[float], quality: Sequence[float], *, cost_lower_is_better: bool = True) -> np.ndarray:
    """(N,) bool: True where no other point is at least as good on both axes and strictly
    better on one. Two identical points are both on the front (neither beats the other);
    of two points with equal cost, the one with lower quality is dominated. A point with a
    NaN cost or quality is never on the front (it cannot be compared)."""
    c = np.asarray(cost, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if c.shape != q.shape or c.ndim != 1:
        raise ValueError(f"cost and quality must be equal-length 1-D, got {c.shape} and {q.shape}")
    if not cost_lower_is_better:
        c = -c  # one rule below: smaller c is better
    ok = np.isfinite(c) & np.isfinite(q)
    front = ok.copy()
    for i in np.flatnonzero(ok):
        others = ok.copy()
        others[i] = False
        no_worse = (c[others] <= c[i]) & (q[others] >= q[i])
        better = (c[others] < c[i]) | (q[others] > q[i])
        if np.any(no_worse & better):
            front[i] = False
    return front


def interpolate_curve(cost: Sequence[float], quality: Sequence[float], at: float, *, clamp: bool = False) -> float:
    """Quality of the piecewise-linear curve through the points (cost, quality), sorted by
    cost, at cost ``at``. Points with the same cost are averaged (one curve value per cost).
    Outside the curve's cost range the answer is NaN (no extrapolation: a static curve says
    nothing beyond its cheapest and dearest point) unless ``clamp``, which holds the end
    values (used on bootstrap resamples whose point moved just past an end)."""
    c = np.asarray(cost, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    keep = np.isfinite(c) & np.isfinite(q)
    c, q = c[keep], q[keep]
    if c.size == 0 or not np.isfinite(at):
        return float("nan")
    xs, inverse = np.unique(c, return_inverse=True)
    ys = np.bincount(inverse, weights=q) / np.bincount(inverse)
    if not clamp and (at < xs[0] or at > xs[-1]):
        return float("nan")
    return float(np.interp(at, xs, ys))


def best_within(cost: Sequence[float], quality: Sequence[float], *, limit: float,
                cost_lower_is_better: bool = True) -> int | None:
    """Index of the highest-quality point whose cost meets ``limit`` (``cost <= limit`` for
    GFLOPs, ``cost >= limit`` for images/s); ties in quality go to the cheaper point (then
    the first listed). None when no point meets the budget. The chosen point is always on
    the Pareto front: a point dominating it would meet the budget too and be chosen instead."""
    c = np.asarray(cost, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    meets = np.isfinite(c) & np.isfinite(q) & ((c <= limit) if cost_lower_is_better else (c >= limit))
    if not meets.any():
        return None
    idx = np.flatnonzero(meets)
    sign = 1.0 if cost_lower_is_better else -1.0
    # lexsort: last key is primary -> highest quality, then lowest (signed) cost, then index
    order = np.lexsort((idx, sign * c[idx], -q[idx]))
    return int(idx[order[0]])
