"""The adaptive advantage (a point minus a curve at equal encoder GFLOPs) with its paired
bootstrap, and the budget picks, on hand-made per-image parts and rows."""

from __future__ import annotations

import numpy as np
import pytest

from adaseg.eval.image_parts import ImageParts
from adaseg.analysis.sweep_analysis import advantages, budget_picks
from adaseg.analysis.sweep_stats import advantage, curve_advantage

N = 6  # images


def _parts(tp: list[int], fp: list[int], gflops: list[float]) -> ImageParts:
    """mIoU parts of N images with 1 class: image i has tp[i], fp[i] pixels (fn 0), so the
    dataset mIoU of a resample is sum tp / (sum tp + sum fp) over its images."""
    n = len(tp)
    seg = np.zeros((n, 1, 3), dtype=np.int64)
    seg[:, 0, 0], seg[:, 0, 1] = tp, fp
    g = np.asarray(gflops, dtype=np.float64)
    return ImageParts(image_ids=np.arange(n), parent_fingerprint="f" * 64, metric="miou",
                      category_ids=np.array([1]), isthing=np.array([False]), seg=seg,
                      exits=np.full(n, 6, dtype=np.int64), gflops_total=g + 1.0, gflops_encoder=g)


def _same(tp: int, fp: int, gflops: float) -> ImageParts:
    return _parts([tp] * N, [fp] * N, [gflops] * N)


def test_gate_advantage_on_identical_images_is_exact():
    # fixed exits: IoU 0.5 at 1 GFLOP, 1.0 at 3 GFLOPs -> the curve is 0.75 at 2 GFLOPs;
    # the gate: IoU 4/5 = 0.8 at 2 GFLOPs -> advantage +0.05 on every resample (images identical).
    fixed = [_same(1, 1, 1.0), _same(1, 0, 3.0)]
    gate = _same(4, 1, 2.0)
    out = advantage(gate, fixed, "mIoU", front=False, n_boot=200, seed=0, level=0.9)
    assert out["estimate"] == pytest.approx(0.05)
    assert out["lo"] == pytest.approx(0.05) and out["hi"] == pytest.approx(0.05)
    assert out["p_le_0"] == pytest.approx(1 / 201)  # never <= 0: the bootstrap's floor


def test_gate_outside_the_curve_is_undefined():
    fixed = [_same(1, 1, 1.0), _same(1, 0, 3.0)]
    out = advantage(_same(4, 1, 3.5), fixed, "mIoU", front=False, n_boot=200, seed=0, level=0.9)
    assert out["estimate"] is None and "outside" in out["undefined"]


def test_advantage_resamples_recompute_every_point():
    # Per-image quality varies; on a resample the statistic must equal the hand formula on
    # those images: gate IoU - interp(curve at gate's mean GFLOPs), each pooled over the resample.
    rng = np.random.default_rng(3)
    tps = [rng.integers(1, 9, N).tolist() for _ in range(3)]
    fps = [rng.integers(0, 5, N).tolist() for _ in range(3)]
    low = _parts(tps[0], fps[0], [1.0] * N)
    high = _parts(tps[1], fps[1], [3.0] * N)
    gate_g = [1.5, 2.5, 2.0, 1.0, 3.0, 2.2]
    gate = _parts(tps[2], fps[2], gate_g)
    stat = curve_advantage(gate, [low, high], "mIoU", front=False)
    idx = np.array([0, 0, 2, 5, 4, 1])

    def iou(k):
        t = sum(tps[k][i] for i in idx)
        return t / (t + sum(fps[k][i] for i in idx))

    g = float(np.mean([gate_g[i] for i in idx]))
    curve_at = iou(0) + (iou(1) - iou(0)) * (g - 1.0) / 2.0
    assert stat(idx) == pytest.approx(iou(2) - curve_at)


def test_pause_curve_is_the_random_front_closed_by_full_depth():
    # random points: (1.0, 0.5), (2.0, 0.4: dominated, left out), full depth (4.0, 1.0);
    # entropy point at 2.5 GFLOPs, IoU 0.9: curve = 0.5 + 0.5 * (1.5 / 3) = 0.75 -> +0.15
    rand = [_same(1, 1, 1.0), _same(2, 3, 2.0)]
    full = _same(1, 0, 4.0)
    ent = _same(9, 1, 2.5)
    out = advantage(ent, rand, "mIoU", front=True, anchor=full, n_boot=100, seed=1, level=0.9)
    assert out["estimate"] == pytest.approx(0.15)


def _row(kind, g, q, ips=100.0, mode=None, beta=None):
    return {"kind": kind, "gflops_encoder_mean": g, "quality": q, "images_per_s": ips, "pause_mode": mode,
            "beta": beta, "point": f"{kind}{g}", "quality_metric": "PQ", "pause": None}


ROWS = [_row("exit", 1.0, 0.30, 400), _row("exit", 2.0, 0.40, 300), _row("full", 3.0, 0.50, 200),
        _row("gate", 1.8, 0.45, 280, beta=0.002), _row("gate", 2.6, 0.52, 210, beta=0.0),
        _row("pause", 2.2, 0.46, 260, mode="entropy"), _row("pause", 2.2, 0.41, 265, mode="random")]


def test_advantage_estimates_from_rows_without_parts():
    out = advantages(ROWS, None, n_boot=0, seed=0, level=0.9)
    # gate 1.8: curve 0.30 + 0.10 * 0.8 = 0.38 -> +0.07; gate 2.6: 0.40 + 0.1 * 0.6 = 0.46 -> +0.06
    assert [e["estimate"] for e in out["gate"]] == [pytest.approx(0.07), pytest.approx(0.06)]
    # random curve: (2.2, 0.41) then full depth (3.0, 0.5): at 2.2 -> 0.41, entropy +0.05
    assert [e["estimate"] for e in out["pause"]] == [pytest.approx(0.05)]


def test_budget_picks_on_a_hand_made_front():
    b = budget_picks(ROWS, target_gflops=2.3, target_ips=None)
    assert b["best"] == 5          # entropy pause 0.46 beats gate 0.45 and exit 2 (0.40)
    assert b["gate"] == 3          # beta 0.002 (1.8 GFLOPs) meets 2.3; beta 0 does not
    assert b["pause_entropy"] == 5 and b["pause_random"] == 6
    b = budget_picks(ROWS, target_gflops=None, target_ips=270)
    assert b["best"] == 3 and b["pause_entropy"] is None
    b = budget_picks(ROWS, target_gflops=2.3, target_ips=262)
    assert b["best"] == 3          # both limits: 5 is too slow (260 images/s)
    b = budget_picks(ROWS, target_gflops=0.5, target_ips=None)
    assert b["best"] is None and b["cheapest"] == 0
    assert budget_picks(ROWS, target_gflops=None, target_ips=None) is None
