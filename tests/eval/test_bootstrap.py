"""Paired bootstrap on hand-made per-image parts where the answer is known."""

from __future__ import annotations


import numpy as np
import pytest

from adaseg.eval.ap_matches import ApMatches
from adaseg.eval.bootstrap import (IncomparableError, compare_reports, metric_intervals, paired_bootstrap,
                                   resample_indices)
from adaseg.eval.image_parts import ImageParts

C, T = 4, 10


def hand_parts(n: int = 200, *, seed: int = 0, iou_shift: float = 0.0, fingerprint: str = "a" * 64) -> ImageParts:
    """n images, 4 classes (2 things), every image with 1-3 matched segments of every class (so
    SQ is defined on every resample), some FPs and FNs; ``iou_shift`` raises every matched
    segment's IoU by that much."""
    rng = np.random.default_rng(seed)
    tp = rng.integers(1, 4, size=(n, C)).astype(np.float64)
    fp = rng.integers(0, 2, size=(n, C)).astype(np.float64)
    fn = rng.integers(0, 2, size=(n, C)).astype(np.float64)
    iou = tp * rng.uniform(0.55, 0.9, size=(n, C)) + tp * iou_shift
    pq = np.stack([tp, fp, fn, iou], axis=-1)
    seg = rng.integers(0, 1000, size=(n, C, 3)).astype(np.int64)
    ap = ApMatches(category_ids=np.array([1, 2]), gt_count=np.ones((n, 2), np.int64), det_image=np.arange(n),
                   det_category=np.zeros(n, np.int64), det_score=rng.uniform(size=n),
                   det_tp=np.ones((n, T), bool), det_fp=np.zeros((n, T), bool))
    return ImageParts(image_ids=np.arange(1000, 1000 + n), parent_fingerprint=fingerprint, metric="pq",
                      category_ids=np.array([1, 2, 10, 11]), isthing=np.array([True, True, False, False]),
                      seg=seg, exits=rng.integers(2, 7, size=n), gflops_total=rng.uniform(1, 2, size=n),
                      gflops_encoder=rng.uniform(0.5, 1, size=n), pq=pq, ap=ap)


def test_resample_indices_are_seeded_and_in_range():
    a = resample_indices(50, 7, seed=3)
    assert a.shape == (7, 50) and a.dtype == np.int64 and a.min() >= 0 and a.max() < 50
    assert np.array_equal(a, resample_indices(50, 7, seed=3))
    assert not np.array_equal(a, resample_indices(50, 7, seed=4))
    # the draw is numpy's Generator: documented, so reproducible outside adaseg
    assert np.array_equal(a, np.random.default_rng(3).integers(0, 50, size=(7, 50)))


def test_identical_settings_give_zero_difference():
    a = hand_parts()
    b = a.replace()  # the same parts, another object
    rows = compare_reports(a, [b], metrics=("PQ", "mIoU", "AP", "gflops_encoder_mean"), n_boot=200, seed=0)
    for row in rows:
        d = row.difference
        assert d.estimate == 0.0 and d.lo == 0.0 and d.hi == 0.0 and d.sd == 0.0, row.metric
        assert d.p_le_0 == 1.0 and d.p_ge_0 == 1.0


def test_a_symmetric_per_image_difference_gives_a_symmetric_interval_around_zero():
    """Half the images +1, half -1: the mean difference's bootstrap distribution is symmetric
    about 0, so the interval contains 0 and its ends mirror each other."""
    d = np.array([1.0, -1.0] * 250)
    iv = paired_bootstrap(lambda idx: float(d[idx].mean()), len(d), n_boot=4000, seed=1)
    assert iv.estimate == 0.0 and iv.lo < 0 < iv.hi
    assert abs(iv.lo + iv.hi) < 0.1 * (iv.hi - iv.lo)
    assert iv.sd == pytest.approx(1 / np.sqrt(len(d)), rel=0.1)  # the standard error of a mean of +-1
    assert 0.4 < iv.p_le_0 < 0.6 and 0.4 < iv.p_ge_0 < 0.6


def test_a_fixed_iou_shift_is_recovered():
    """Raising every matched segment's IoU by 0.05 raises every class's SQ by exactly 0.05 on
    every resample, and PQ by 0.05 x RQ."""
    a, b = hand_parts(), hand_parts(iou_shift=0.05)
    rows = {r.metric: r for r in compare_reports(a, [b], metrics=("SQ", "PQ", "mIoU"), n_boot=300, seed=2)}
    sq = rows["SQ"].difference
    assert sq.estimate == pytest.approx(0.05, abs=1e-12)
    assert sq.lo == pytest.approx(0.05, abs=1e-12) and sq.hi == pytest.approx(0.05, abs=1e-12)
    assert sq.p_le_0 == 1 / 301 and sq.p_ge_0 == 1.0
    pq = rows["PQ"].difference
    assert pq.estimate == pytest.approx(0.05 * a.metrics()["RQ"], abs=1e-12)
    assert 0 < pq.lo <= pq.estimate <= pq.hi
    assert rows["mIoU"].difference.hi == 0.0  # same semantic parts
    assert rows["SQ"].value - rows["SQ"].baseline == pytest.approx(0.05, abs=1e-12)


def test_a_noisy_shift_is_covered_by_the_interval():
    """Per-image differences 0.3 + N(0, 1): the mean is in the interval, the interval has the
    width the normal theory gives, and "not positive" gets a small p-value."""
    rng = np.random.default_rng(5)
    d = 0.3 + rng.normal(size=400)
    iv = paired_bootstrap(lambda idx: float(d[idx].mean()), len(d), n_boot=2000, seed=0, level=0.9)
    se = d.std(ddof=1) / np.sqrt(len(d))
    assert iv.estimate == pytest.approx(d.mean())
    assert iv.lo < iv.estimate < iv.hi
    assert (iv.hi - iv.lo) == pytest.approx(2 * 1.645 * se, rel=0.15)
    assert iv.p_le_0 < 0.01 and iv.p_ge_0 > 0.99


def test_undefined_resamples_are_dropped_and_counted():
    calls = {"n": 0}

    def stat(idx):
        calls["n"] += 1
        return None if idx[0] % 2 else 1.0

    iv = paired_bootstrap(stat, 10, n_boot=500, seed=0)
    draws = resample_indices(10, 500, seed=0)
    assert iv.dropped == int((draws[:, 0] % 2 == 1).sum()) and 0 < iv.dropped < 500
    assert iv.lo == iv.hi == 1.0 and iv.p_le_0 == 1 / (500 - iv.dropped + 1)
    assert calls["n"] == 501  # the full set once, then each resample


def test_metric_intervals_of_one_report():
    a = hand_parts()
    ivs = metric_intervals(a, ["PQ", "exit_mean"], n_boot=300, seed=0)
    full = a.metrics()
    for key in ("PQ", "exit_mean"):
        assert ivs[key].estimate == pytest.approx(full[key], rel=1e-12)
        assert ivs[key].lo < ivs[key].estimate < ivs[key].hi
    assert ivs["exit_mean"].sd == pytest.approx(a.exits.std() / np.sqrt(a.num_images), rel=0.15)


def test_level_must_be_a_fraction():
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(lambda idx: 0.0, 5, n_boot=10, seed=0, level=90)


def test_parts_on_other_images_or_parents_are_refused():
    a = hand_parts()
    with pytest.raises(IncomparableError, match="other images"):
        compare_reports(a, [hand_parts(n=150)], metrics=("PQ",), n_boot=10, seed=0)
    shuffled = a.replace(image_ids=a.image_ids[::-1].copy())
    with pytest.raises(IncomparableError, match="other images"):
        compare_reports(a, [shuffled], metrics=("PQ",), n_boot=10, seed=0)
    with pytest.raises(IncomparableError, match="parent"):
        compare_reports(a, [hand_parts(fingerprint="b" * 64)], metrics=("PQ",), n_boot=10, seed=0)
    with pytest.raises(KeyError, match="choose from"):
        compare_reports(a, [a], metrics=("PQ", "bogus"), n_boot=10, seed=0)


def test_resamples_that_would_not_fit_in_memory_are_refused_before_drawing(monkeypatch):
    """Memory is bounded by refusing, with the memory the resamples would need: the draws stay
    one call (chunked draws would change every interval of a seed)."""
    import adaseg.eval.bootstrap as bs

    with pytest.raises(bs.BootstrapMemoryError, match=r"1000000000 bootstrap resamples of 5000 images would need "
                                                      r"37260\.4 GiB of memory \(at most 2 GiB\): use at most"):
        bs.paired_bootstrap(lambda idx: 0.0, 5000, n_boot=1_000_000_000, seed=0)
    monkeypatch.setattr(bs, "MAX_RESAMPLE_BYTES", 8 * 10 * (4 + 1) - 1)
    with pytest.raises(bs.BootstrapMemoryError, match="use at most 9 resamples"):
        bs.resample_indices(4, 10, 0)


def test_the_memory_bound_leaves_the_resamples_of_a_seed_unchanged():
    """The same seed gives the same draws as numpy's one call (what every earlier report used)."""
    from adaseg.eval.bootstrap import resample_indices

    expected = np.random.default_rng(7).integers(0, 50, size=(1000, 50), dtype=np.int64)
    assert np.array_equal(resample_indices(50, 1000, 7), expected)
