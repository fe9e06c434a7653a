"""Uncertainty of a sweep: a point's quality interval and the adaptive advantages, by the
paired bootstrap over images (:func:`adaseg.eval.bootstrap.paired_bootstrap`).

Every point of a sweep is evaluated on the same images, so one resample of image indices
applies to all of them: each statistic below recomputes the dataset-level metrics and the
mean encoder GFLOPs of every point it needs on that resample
(:meth:`adaseg.eval.image_parts.ImageParts.metrics`), then combines them.

- gate advantage: the gate's quality minus the fixed-exit curve (quality vs encoder GFLOPs,
  piecewise linear through the fixed exits) at the gate's encoder GFLOPs;
- pause advantage: an entropy-paused point's quality minus the random-pausing curve (the
  Pareto front of the random points, closed by the unpaused full depth -- the curve's
  common end, kept even when a random point dominates it) at its encoder GFLOPs.

Estimates use the full image set; when the estimate's cost lies outside its curve's cost
range the advantage is undefined (no extrapolation) and no interval is drawn. On a
resample whose point moved just past a curve end, the end value is held (``clamp``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from adaseg.analysis.pareto import interpolate_curve, pareto_front

GFLOPS_KEY = "gflops_encoder_mean"


def _value(metrics: dict, key: str) -> float:
    v = metrics.get(key)
    return float("nan") if v is None else float(v)


def point_intervals(parts, keys: Sequence[str], *, n_boot: int, seed: int, level: float) -> dict[str, dict]:
    """Bootstrap intervals of one point's dataset-level figures ``keys`` (PQ, mIoU, AP, ...)
    and of its mean encoder GFLOPs: ``{key: Interval.to_json()}``. With one ``seed`` every
    point sees the same resamples."""
    from adaseg.eval.bootstrap import bootstrap_many

    keys = tuple(k for k in keys if k != GFLOPS_KEY) + (GFLOPS_KEY,)
    ivs = bootstrap_many(lambda idx: list(parts.metrics(idx, keys=keys).values()), parts.num_images,
                         n_boot=n_boot, seed=seed, level=level)
    return {k: iv.to_json() for k, iv in zip(keys, ivs)}


def curve_points(xs: np.ndarray, ys: np.ndarray, *, front: bool, anchor: tuple[float, float] | None = None):
    """The curve's (cost, quality) points: all of them, or with ``front`` their Pareto front;
    ``anchor`` (a point always on the curve) appended."""
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if front:
        keep = pareto_front(xs, ys)
        xs, ys = xs[keep], ys[keep]
    if anchor is not None:
        xs, ys = np.append(xs, anchor[0]), np.append(ys, anchor[1])
    return xs, ys


def curve_advantage(point, curve: Sequence, key: str, *, front: bool, anchor=None) -> callable:
    """The statistic ``idx -> quality(point) - curve(gflops(point))`` on a resample ``idx``.

    ``point``, ``anchor`` and every member of ``curve`` are ImageParts of the same images;
    the curve is :func:`curve_points` of their figures on that resample."""
    keys = (key, GFLOPS_KEY)  # AP is costly: only what the statistic needs

    def statistic(idx, clamp: bool = True) -> float:
        m = point.metrics(idx, keys=keys)
        cm = [c.metrics(idx, keys=keys) for c in curve]
        xs = np.array([_value(c, GFLOPS_KEY) for c in cm])
        ys = np.array([_value(c, key) for c in cm])
        end = None
        if anchor is not None:
            a = anchor.metrics(idx, keys=keys)
            end = (_value(a, GFLOPS_KEY), _value(a, key))
        xs, ys = curve_points(xs, ys, front=front, anchor=end)
        return _value(m, key) - interpolate_curve(xs, ys, _value(m, GFLOPS_KEY), clamp=clamp)

    return statistic


def advantage(point, curve: Sequence, key: str, *, front: bool, anchor=None, n_boot: int, seed: int,
              level: float) -> dict:
    """The paired-bootstrap interval (``n_boot`` >= 1 resamples) of :func:`curve_advantage`;
    ``{"estimate": None, "undefined": reason}`` when the point lies outside the curve."""
    from adaseg.eval.bootstrap import paired_bootstrap

    stat = curve_advantage(point, curve, key, front=front, anchor=anchor)
    everything = np.arange(point.num_images)
    estimate = stat(everything, clamp=False)
    if not np.isfinite(estimate):
        return {"estimate": None, "undefined": "its encoder GFLOPs lie outside the curve's range (no extrapolation)"}
    return paired_bootstrap(stat, point.num_images, n_boot=n_boot, seed=seed, level=level).to_json()
