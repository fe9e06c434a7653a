"""Pareto front, curve interpolation and budget choice on hand-made points (answers worked out
by hand in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaseg.analysis.pareto import best_within, interpolate_curve, pareto_front

NAN = float("nan")


def test_front_dominated_ties_and_equal_cost():
    #        A     B     C      D     E(=A)  F     G(NaN)
    cost = [1.0, 2.0, 2.0, 3.0, 1.0, 4.0, NAN]
    qual = [0.5, 0.6, 0.55, 0.6, 0.5, 0.7, 0.9]
    # C: same cost as B, lower quality -> dominated; D: B's quality at more cost -> dominated;
    # A and E are identical: neither beats the other, both stay; G cannot be compared.
    assert pareto_front(cost, qual).tolist() == [True, True, False, False, True, True, False]


def test_front_images_per_second_is_higher_better():
    ips = [100.0, 200.0, 150.0, 200.0]
    qual = [0.7, 0.6, 0.5, 0.65]
    # 150 img/s at 0.5 loses to 200 img/s at 0.6; of the two at 200 img/s the better quality stays.
    assert pareto_front(ips, qual, cost_lower_is_better=False).tolist() == [True, False, False, True]


def test_front_single_and_all_equal():
    assert pareto_front([1.0], [0.1]).tolist() == [True]
    assert pareto_front([2.0, 2.0, 2.0], [0.3, 0.3, 0.3]).tolist() == [True, True, True]


def test_front_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="equal-length"):
        pareto_front([1.0, 2.0], [0.1])


def test_interpolate_between_inside_and_outside():
    cost = [3.0, 1.0, 5.0]  # unsorted on purpose
    qual = [0.6, 0.2, 0.7]
    assert interpolate_curve(cost, qual, 2.0) == pytest.approx(0.4)  # halfway 0.2 -> 0.6
    assert interpolate_curve(cost, qual, 4.5) == pytest.approx(0.675)  # 0.6 + 0.75 * 0.1
    assert interpolate_curve(cost, qual, 1.0) == pytest.approx(0.2)  # an end point exactly
    assert math.isnan(interpolate_curve(cost, qual, 0.5))  # no extrapolation
    assert math.isnan(interpolate_curve(cost, qual, 5.5))
    assert interpolate_curve(cost, qual, 0.5, clamp=True) == pytest.approx(0.2)
    assert interpolate_curve(cost, qual, 9.0, clamp=True) == pytest.approx(0.7)


def test_interpolate_equal_costs_are_averaged():
    # two points at cost 3 (0.6, 0.8) stand for one curve value 0.7
    assert interpolate_curve([1.0, 3.0, 3.0], [0.2, 0.6, 0.8], 3.0) == pytest.approx(0.7)
    assert interpolate_curve([1.0, 3.0, 3.0], [0.2, 0.6, 0.8], 2.0) == pytest.approx(0.45)


def test_interpolate_skips_undefined_points():
    assert interpolate_curve([1.0, 2.0, 3.0], [0.2, NAN, 0.6], 2.0) == pytest.approx(0.4)
    assert math.isnan(interpolate_curve([], [], 1.0))


# A hand-made front: index: (GFLOPs, quality, images/s)
FRONT = [(1.0, 0.40, 300.0), (2.0, 0.50, 200.0), (2.0, 0.50, 210.0), (3.0, 0.55, 150.0), (4.0, 0.54, 140.0),
         (5.0, 0.60, 100.0)]


def _cols(points):
    return [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]


@pytest.mark.parametrize("limit, expected", [
    (0.5, None),   # nothing is that cheap
    (1.0, 0),      # only the cheapest point
    (2.5, 1),      # 1 and 2 tie (0.50, 2.0 GFLOPs): the first listed
    (4.5, 3),      # 0.55 beats the dearer 0.54
    (10.0, 5),     # everything meets it: the best quality
])
def test_budget_gflops(limit, expected):
    g, q, _ = _cols(FRONT)
    assert best_within(g, q, limit=limit) == expected


@pytest.mark.parametrize("limit, expected", [
    (400.0, None),
    (205.0, 2),    # only 0 and 2 are fast enough: 2 has the better quality
    (150.0, 3),
    (100.0, 5),
])
def test_budget_images_per_second(limit, expected):
    _, q, ips = _cols(FRONT)
    assert best_within(ips, q, limit=limit, cost_lower_is_better=False) == expected


def test_budget_tie_in_quality_goes_to_the_cheaper_point():
    assert best_within([3.0, 2.0, 2.5], [0.5, 0.5, 0.5], limit=3.0) == 1
    assert best_within([100.0, 300.0, 200.0], [0.5, 0.5, 0.5], limit=50.0, cost_lower_is_better=False) == 1


def test_budget_choice_is_on_the_front():
    g, q, _ = _cols(FRONT)
    front = pareto_front(g, q)
    for limit in np.linspace(0.5, 6.0, 23):
        j = best_within(g, q, limit=float(limit))
        assert j is None or front[j]
