"""Paired bootstrap over images: how far a dataset-level figure, or a difference of two, can
move with the images drawn.

A resample draws N image indices with replacement (one seeded numpy Generator); the statistic
is recomputed on it (e.g. :meth:`adaseg.eval.image_parts.ImageParts.metrics` of two settings on
the *same* indices, so what the images share cancels: a paired comparison). Over ``n_boot``
resamples, :class:`Interval` gives the percentile interval at ``level``, the standard
deviation and one-sided p-values ``(1 + #{resamples <= 0}) / (n_kept + 1)`` (and ``>= 0``):
the bootstrap's estimate of how often the difference is not positive (not negative), never 0.
A resample on which the figure is undefined (NaN or None, e.g. PQ_th of images without things)
is dropped and counted in ``dropped``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from adaseg.eval.image_parts import ImageParts


@dataclass(frozen=True)
class Interval:
    """A figure with its bootstrap uncertainty.

    Attributes:
        estimate: the statistic on all images (indices ``arange(N)``); NaN if undefined.
        lo, hi: the percentile interval at ``level`` (NaN when no resample was kept).
        sd: the standard deviation over the kept resamples (ddof 1).
        p_le_0, p_ge_0: ``(1 + #{kept <= 0}) / (n_kept + 1)``, likewise ``>= 0``.
        n_boot: resamples drawn; dropped: those where the statistic was undefined.
        level: the interval's coverage, e.g. 0.9.
    """

    estimate: float
    lo: float
    hi: float
    sd: float
    p_le_0: float
    p_ge_0: float
    n_boot: int
    dropped: int
    level: float

    def to_json(self) -> dict:
        """JSON-ready (NaN as None)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


# The resamples are drawn in one call (the draws, and so every interval, are then the same for a
# seed whatever the machine); their indices take 8 bytes per image per resample, so the count is
# bounded by memory rather than chunked (chunked draws would change the intervals of a seed).
MAX_RESAMPLE_BYTES = 2 * 2**30


class BootstrapMemoryError(ValueError):
    """The resamples asked for would not fit in :data:`MAX_RESAMPLE_BYTES`; the message says how
    much they would need."""


def check_resample_memory(n_images: int, n_boot: int, n_stats: int = 1) -> None:
    """Raise :class:`BootstrapMemoryError` if ``n_boot`` resamples of ``n_images`` images (and
    their ``n_stats`` values) would need more than :data:`MAX_RESAMPLE_BYTES`."""
    need = 8 * int(n_boot) * (int(n_images) + int(n_stats))
    if need > MAX_RESAMPLE_BYTES:
        most = MAX_RESAMPLE_BYTES // (8 * (int(n_images) + int(n_stats)))
        raise BootstrapMemoryError(f"{n_boot} bootstrap resamples of {n_images} images would need "
                                   f"{need / 2**30:.1f} GiB of memory (at most {MAX_RESAMPLE_BYTES / 2**30:g} GiB): "
                                   f"use at most {most} resamples")


def resample_indices(n_images: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_images) int64 image indices drawn with replacement by
    ``np.random.default_rng(seed)``: the same arguments give the same resamples anywhere."""
    if n_images < 1 or n_boot < 1:
        raise ValueError(f"resample_indices: need n_images >= 1 and n_boot >= 1, got {n_images}, {n_boot}")
    check_resample_memory(n_images, n_boot)
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_images, size=(n_boot, n_images), dtype=np.int64)


def _as_float(x) -> float:
    return math.nan if x is None else float(x)


def bootstrap_many(statistic: Callable[[np.ndarray], Sequence[float | None]], n_images: int, *, n_boot: int,
                   seed: int, level: float = 0.90) -> list[Interval]:
    """:func:`paired_bootstrap` of several statistics at once: ``statistic(indices)`` returns
    one value per statistic (None or NaN where undefined); every statistic sees the same
    resamples. One :class:`Interval` per statistic."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    check_resample_memory(n_images, n_boot)
    estimate = np.array([_as_float(v) for v in statistic(np.arange(n_images, dtype=np.int64))])
    check_resample_memory(n_images, n_boot, len(estimate))
    draws = resample_indices(n_images, n_boot, seed)
    values = np.array([[_as_float(v) for v in statistic(row)] for row in draws]).reshape(n_boot, len(estimate))
    tail = (1.0 - level) / 2.0
    out = []
    for j in range(len(estimate)):
        kept = values[:, j][~np.isnan(values[:, j])]
        if kept.size:
            lo, hi = (float(v) for v in np.quantile(kept, [tail, 1.0 - tail]))
            sd = float(kept.std(ddof=1)) if kept.size > 1 else 0.0
            p_le = (1 + int((kept <= 0).sum())) / (kept.size + 1)
            p_ge = (1 + int((kept >= 0).sum())) / (kept.size + 1)
        else:
            lo = hi = sd = p_le = p_ge = math.nan
        out.append(Interval(estimate=float(estimate[j]), lo=lo, hi=hi, sd=sd, p_le_0=p_le, p_ge_0=p_ge,
                            n_boot=n_boot, dropped=int(n_boot - kept.size), level=level))
    return out


def paired_bootstrap(statistic: Callable[[np.ndarray], float | None], n_images: int, *, n_boot: int, seed: int,
                     level: float = 0.90) -> Interval:
    """The bootstrap :class:`Interval` of ``statistic(indices)`` over ``n_boot`` resamples of
    ``n_images`` images (:func:`resample_indices`); ``statistic`` may compute anything from the
    indices, e.g. the difference of two settings' figures on the same images."""
    return bootstrap_many(lambda idx: [statistic(idx)], n_images, n_boot=n_boot, seed=seed, level=level)[0]


def metric_intervals(parts: ImageParts, metrics: Sequence[str], n_boot: int, seed: int, level: float = 0.90
                     ) -> dict[str, Interval]:
    """Each figure of one report (``metrics``: keys of :meth:`ImageParts.metrics`) with its
    bootstrap interval over the report's images."""
    keys = tuple(metrics)
    intervals = bootstrap_many(lambda idx: list(parts.metrics(idx, keys=keys).values()), parts.num_images,
                               n_boot=n_boot, seed=seed, level=level)
    return dict(zip(keys, intervals))


class IncomparableError(ValueError):
    """Two reports' parts cannot be paired (other images, another parent, another metric)."""


@dataclass(frozen=True)
class ComparisonRow:
    """One figure of one report against the baseline: ``other`` indexes the ``others`` list."""

    other: int
    metric: str
    baseline: float | None
    value: float | None
    difference: Interval

    def to_json(self) -> dict:
        return {"other": self.other, "metric": self.metric, "baseline": self.baseline, "value": self.value,
                "difference": self.difference.to_json()}


def check_comparable(baseline: ImageParts, other: ImageParts, *, name: str = "a report",
                     baseline_name: str = "the baseline", across_parents: bool = False) -> None:
    """Refuse a pair that cannot be compared image by image: :class:`IncomparableError`.
    Two parents are paired only with ``across_parents`` (e.g. two training recipes scored on
    the same images: the pairing by image holds, the difference then includes training)."""
    if other.parent_fingerprint != baseline.parent_fingerprint and not across_parents:
        raise IncomparableError(f"{name} evaluates parent {other.parent_fingerprint[:12]}, {baseline_name} parent "
                                f"{baseline.parent_fingerprint[:12]}: only settings of one parent are compared "
                                "(--across-parents pairs two parents' reports on the same images)")
    if other.metric != baseline.metric:
        raise IncomparableError(f"{name} is scored by {other.metric}, {baseline_name} by {baseline.metric}")
    if other.image_ids.shape != baseline.image_ids.shape or not np.array_equal(other.image_ids, baseline.image_ids):
        raise IncomparableError(f"{name} was evaluated on other images than {baseline_name} ({other.num_images} vs "
                                f"{baseline.num_images} images, or other ids/order): evaluate both with the same "
                                "--data and --limit")
    if not np.array_equal(other.category_ids, baseline.category_ids):
        raise IncomparableError(f"{name} has other categories than {baseline_name}")


def compare_reports(baseline: ImageParts, others: list[ImageParts], *, metrics: Sequence[str], n_boot: int,
                    seed: int, level: float = 0.90, names: Sequence[str] | None = None,
                    across_parents: bool = False) -> list[ComparisonRow]:
    """Each of ``others`` minus ``baseline`` on every figure in ``metrics``, with a paired
    bootstrap interval (all reports and figures on the same resamples). Rows are ordered by
    report, then by ``metrics``. Raises :class:`IncomparableError` for parts on other images
    or of another parent (unless ``across_parents``); KeyError for a figure these reports do
    not have."""
    names = list(names) if names is not None else [f"report {i + 1}" for i in range(len(others))]
    for other, name in zip(others, names):
        check_comparable(baseline, other, name=name, across_parents=across_parents)
    keys = tuple(metrics)
    for k in keys:
        if k not in baseline.metric_names:
            raise KeyError(f"{k!r} is not a figure of a {baseline.metric!r} evaluation; choose from "
                           f"{', '.join(baseline.metric_names)}")

    def differences(idx: np.ndarray) -> list[float]:
        base = baseline.metrics(idx, keys=keys)
        out = []
        for other in others:
            mine = other.metrics(idx, keys=keys)
            out.extend(math.nan if base[k] is None or mine[k] is None else mine[k] - base[k] for k in keys)
        return out

    intervals = bootstrap_many(differences, baseline.num_images, n_boot=n_boot, seed=seed, level=level)
    base_full = baseline.metrics(keys=keys)
    rows = []
    for i, other in enumerate(others):
        mine = other.metrics(keys=keys)
        for j, k in enumerate(keys):
            rows.append(ComparisonRow(other=i, metric=k, baseline=base_full[k], value=mine[k],
                                      difference=intervals[i * len(keys) + j]))
    return rows
