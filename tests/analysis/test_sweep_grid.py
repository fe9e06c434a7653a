"""The sweep's points and PAUMER's greedy pause search, on hand-made measurements."""

from __future__ import annotations

import pytest

from adaseg.analysis.sweep_grid import PointSpec, base_points, greedy_pause_search, parse_exits

# (encoder GFLOPs, quality) of a made-up parent with 4 encoder layers, full depth (10, 0.50).
STAGE1 = {
    None: (10.0, 0.500),
    "1:0.2": (8.5, 0.490),   # slope 0.010 / 1.5 = 0.0067 per GFLOP
    "1:0.5": (6.25, 0.400),  # 0.100 / 3.75 = 0.0267
    "2:0.2": (9.0, 0.495),   # 0.005 / 1.0  = 0.0050  <- least quality lost per GFLOP saved
    "2:0.5": (7.5, 0.450),   # 0.050 / 2.5  = 0.0200
    "3:0.2": (9.6, 0.490),   # 0.010 / 0.4  = 0.0250
    "3:0.5": (9.0, 0.480),   # dominated by 2:0.2 (same cost, better quality)
}


def _measure(table, calls):
    def measure(spec):
        calls.append(spec)
        return table[spec]

    return measure


def test_greedy_picks_least_loss_per_gflop_then_a_second_layer():
    table = {**STAGE1,
             "2:0.2,3:0.2": (8.6, 0.494),   # slope vs 2:0.2: 0.001 / 0.4 = 0.0025, on the front
             "2:0.2,3:0.5": (8.0, 0.470)}   # 0.025 / 1.0 = 0.025
    calls = []
    stages = greedy_pause_search(_measure(table, calls), depth=4, ratios=(0.2, 0.5), max_stages=2)
    assert [s.chosen for s in stages] == ["2:0.2", "2:0.2,3:0.2"]
    assert stages[0].base is None and stages[1].base == "2:0.2"
    # stage 1: every layer 1..3 x ratio; stage 2: only layers after 2
    assert stages[0].candidates == ["1:0.2", "1:0.5", "2:0.2", "2:0.5", "3:0.2", "3:0.5"]
    assert stages[1].candidates == ["2:0.2,3:0.2", "2:0.2,3:0.5"]
    assert sorted(calls, key=str) == sorted(table, key=str)  # each measured once
    assert len(calls) == len(set(calls))


def test_greedy_stops_when_a_second_layer_is_not_beneficial():
    table = {**STAGE1,
             "2:0.2,3:0.2": (8.8, 0.480),   # dominated by 1:0.2 (8.5, 0.49)
             "2:0.2,3:0.5": (8.0, 0.400)}   # dominated by 2:0.5 (7.5, 0.45)
    stages = greedy_pause_search(_measure(table, []), depth=4, ratios=(0.2, 0.5), max_stages=3)
    assert [s.chosen for s in stages] == ["2:0.2", None]
    assert "not beneficial" in stages[1].reason


def test_greedy_layers_and_no_layer_left():
    calls = []
    stages = greedy_pause_search(_measure(STAGE1, calls), depth=4, layers=(3,), ratios=(0.2,), max_stages=2)
    assert [s.chosen for s in stages] == ["3:0.2", None]
    assert "no pause layer left after layer 3" in stages[1].reason
    assert calls == [None, "3:0.2"]


def test_greedy_prefers_no_loss_then_the_larger_saving():
    table = {None: (10.0, 0.50), "1:0.2": (8.0, 0.49), "2:0.2": (9.0, 0.51)}  # 2:0.2 is cheaper AND better
    stages = greedy_pause_search(_measure(table, []), depth=3, layers=(1, 2), ratios=(0.2,), max_stages=1)
    assert stages[0].chosen == "2:0.2"
    # two candidates lose nothing: the larger saving wins, not the larger gain per GFLOP
    table = {None: (10.0, 0.50), "1:0.2": (7.0, 0.50), "2:0.2": (9.5, 0.52)}
    stages = greedy_pause_search(_measure(table, []), depth=3, layers=(1, 2), ratios=(0.2,), max_stages=1)
    assert stages[0].chosen == "1:0.2"


def test_parse_exits_adds_full_depth():
    assert parse_exits("2,4", 6) == [2, 4, 6]
    assert parse_exits("all", 3) == [1, 2, 3]
    assert parse_exits("4,2,4", 6) == [2, 4, 6]
    with pytest.raises(ValueError, match="outside the parent's layers 1..6"):
        parse_exits("7", 6)
    with pytest.raises(ValueError, match="not an exit layer"):
        parse_exits("two", 6)


def test_base_points_grid_and_combinations():
    points = base_points([2, 6], [0.0, 0.002], ["3:0.4"], ["entropy", "random"], depth=6)
    kinds = [p.kind for p in points]
    assert kinds.count("exit") == 1 and kinds.count("full") == 1
    assert kinds.count("gate") == 2 and kinds.count("pause") == 2 and kinds.count("gate+pause") == 4
    assert PointSpec(exit=None).key() == PointSpec(exit=None, origin="grid").key()
    # the mode of a point without pausing does not make it another point
    assert PointSpec(beta=0.0, mode="random").key() == PointSpec(beta=0.0).key()
