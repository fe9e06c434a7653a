"""Uncertainty of a sweep: a point's quality interval and the adaptive advantages, by the
paired bootstrap over images (:func:`adaseg.eval.bootstrap.paired_bootstrap`).

Every point of a sweep is evaluated on the same images, so one resample of image indices
applies to all of them: each statistic below recomputes the dataset-level metrics and the
mean encoder GFLOPs of every point it needs on that resample
(:meth:`adaseg.eval.image_parts.ImageParts.metrics`), then combines them.

- gate advantage: the gate's quality minus the fixed-exit curve (quality vs encoder GFLOPs,
  piecewise linear through the fixed exits) at the gate's encoder GFLOPs;
- pause advantage: an entropy-paused point's quality minus the random-pausing curve (the
  Pareto front of the random points and the unpaused full depth) at its encoder GFLOPs.

Estimates use the full image set; when the estimate's cost lies outside its curve's cost
range the advantage is undefined (no extrapolation) and no interval is drawn. On a
resample whose point moved just past a curve end, the end value is held (``clamp``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from adaseg.recipes.pareto import interpolate_curve, pareto_front

GFLOPS_KEY = "gflops_encoder_mean"


def _value(metrics: dict, key: str) -> float:
    v = metrics.get(key)
    return float("nan") if v is None else float(v)


def interval_json(iv) -> dict:
    """An :class:`adaseg.eval.bootstrap.Interval` as JSON numbers (NaN -> None)."""
    def num(x):
        return None if x is None or not np.isfinite(x) else float(x)

    return {"estimate": num(iv.estimate), "lo": num(iv.lo), "hi": num(iv.hi), "sd": num(iv.sd),
            "p_le_0": num(iv.p_le_0), "p_ge_0": num(iv.p_ge_0), "n_boot": int(iv.n_boot), "level": float(iv.level)}


def quality_interval(parts, key: str, *, n_boot: int, seed: int, level: float) -> dict:
    """Bootstrap interval of one point's dataset-level ``key`` (PQ, mIoU, ...)."""
    from adaseg.eval.bootstrap import paired_bootstrap

    iv = paired_bootstrap(lambda idx: _value(parts.metrics(idx), key), _n_images(parts), n_boot=n_boot, seed=seed,
                          level=level)
    return interval_json(iv)


def _n_images(parts) -> int:
    return int(len(parts.exits))


def curve_advantage(point, curve: Sequence, key: str, *, front: bool) -> callable:
    """The statistic ``idx -> quality(point) - curve(gflops(point))`` on a resample ``idx``.

    ``point`` and every member of ``curve`` are ImageParts of the same images; with
    ``front`` the curve is the Pareto front of ``curve``'s points on that resample."""
    def statistic(idx, clamp: bool = True) -> float:
        m = point.metrics(idx)
        cm = [c.metrics(idx) for c in curve]
        xs = np.array([_value(c, GFLOPS_KEY) for c in cm])
        ys = np.array([_value(c, key) for c in cm])
        if front:
            keep = pareto_front(xs, ys)
            xs, ys = xs[keep], ys[keep]
        return _value(m, key) - interpolate_curve(xs, ys, _value(m, GFLOPS_KEY), clamp=clamp)

    return statistic


def advantage(point, curve: Sequence, key: str, *, front: bool, n_boot: int, seed: int, level: float) -> dict:
    """The paired-bootstrap interval (``n_boot`` >= 1 resamples) of :func:`curve_advantage`;
    ``{"estimate": None, "undefined": reason}`` when the point lies outside the curve."""
    from adaseg.eval.bootstrap import paired_bootstrap

    stat = curve_advantage(point, curve, key, front=front)
    everything = np.arange(_n_images(point))
    estimate = stat(everything, clamp=False)
    if not np.isfinite(estimate):
        return {"estimate": None, "undefined": "its encoder GFLOPs lie outside the curve's range (no extrapolation)"}
    return interval_json(paired_bootstrap(stat, _n_images(point), n_boot=n_boot, seed=seed, level=level))
