"""ApMatches' accumulation on hand-computed cases (COCOeval's rules worked out by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from adaseg.eval.ap_matches import ApMatches

T = 10


def _matches(gt_count, dets):
    """dets: [(image, category, score, tp, fp)] with the same flags at every IoU threshold."""
    dets = sorted(dets, key=lambda d: (d[0], d[1], -d[2]))
    return ApMatches(category_ids=np.arange(np.asarray(gt_count).shape[1]), gt_count=np.asarray(gt_count),
                     det_image=np.array([d[0] for d in dets], dtype=np.int64),
                     det_category=np.array([d[1] for d in dets], dtype=np.int64),
                     det_score=np.array([d[2] for d in dets], dtype=np.float64),
                     det_tp=np.array([[d[3]] * T for d in dets], dtype=bool).reshape(-1, T),
                     det_fp=np.array([[d[4]] * T for d in dets], dtype=bool).reshape(-1, T))


def test_precision_envelope_at_101_recall_points():
    """2 GT; detections TP (0.9), FP (0.8), TP (0.7): recall 0.5, 0.5, 1 at precision 1, 1/2,
    2/3; the envelope makes it 1, 2/3, 2/3: recall points 0..0.50 read 1, 0.51..1 read 2/3."""
    m = _matches([[2]], [(0, 0, 0.9, 1, 0), (0, 0, 0.8, 0, 1), (0, 0, 0.7, 1, 0)])
    ap = m.accumulate(np.array([1]), np.array([0]))
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    for key in ("AP", "AP50", "AP75"):  # the same flags at every IoU threshold
        assert ap[key] == pytest.approx(expected, abs=1e-12), key


def test_the_envelope_lifts_precision_before_a_later_better_point():
    """2 GT; FP (0.95), TP (0.9), TP (0.8): precision 0, 1/2, 2/3 at recall 0, 1/2, 1; the
    envelope reads 2/3 at every recall point (without it: 0, then 1/2, then 2/3)."""
    m = _matches([[2]], [(0, 0, 0.95, 0, 1), (0, 0, 0.9, 1, 0), (0, 0, 0.8, 1, 0)])
    assert m.accumulate(np.array([1]), np.array([0]))["AP50"] == pytest.approx(2 / 3, abs=1e-12)


def test_pooling_across_images_and_repeats():
    """Image 0: one TP at 0.9; image 1: one FP at 0.95, 1 GT each. Pooled: FP first (0.95),
    then TP: precision 0, 1/2 at recall 0, 1/2 -> the envelope 1/2 up to recall 0.5, then 0.
    Drawing image 0 twice: 2 TPs of 2 GT, perfect."""
    m = _matches([[1], [1]], [(0, 0, 0.9, 1, 0), (1, 0, 0.95, 0, 1)])
    both = m.accumulate(np.array([1, 1]), np.array([0, 1]))
    assert both["AP"] == pytest.approx(51 * 0.5 / 101, abs=1e-12)
    assert m.accumulate(np.array([2, 0]), np.array([0, 1]))["AP"] == pytest.approx(1.0)


def test_categories_without_gt_are_left_out_and_gt_without_detections_count_zero():
    # category 0: 1 GT, a perfect detection; category 1: no GT but a detection (left out);
    # category 2: 1 GT, no detection (0)
    m = _matches([[1, 0, 1]], [(0, 0, 0.9, 1, 0), (0, 1, 0.8, 0, 1)])
    prec = m.precision(np.array([1]), np.array([0]))
    assert (prec[:, :, 1] == -1).all() and (prec[:, :, 2] == 0).all()
    assert np.allclose(prec[:, :, 0], 1.0, rtol=0, atol=1e-15)  # 1 / (1 + eps), as COCOeval
    assert m.accumulate(np.array([1]), np.array([0]))["AP"] == pytest.approx(0.5)
    nothing = _matches([[0]], [(0, 0, 0.5, 0, 1)])
    assert nothing.accumulate(np.array([1]), np.array([0])) == {"AP": None, "AP50": None, "AP75": None}


def test_a_detection_matched_to_a_crowd_is_neither_tp_nor_fp():
    m = _matches([[1]], [(0, 0, 0.99, 0, 0), (0, 0, 0.5, 1, 0)])
    assert m.accumulate(np.array([1]), np.array([0]))["AP"] == pytest.approx(1.0)
