"""``adaseg skyline``: each sweep's skyline (the best quality at each GFLOPs budget / each
throughput) against a hand-worked case, and bad input refused in one line with nothing
written."""

from __future__ import annotations

import json

import pytest
from recipe_testing import invoke

from adaseg.analysis.skyline import skyline_rows


def _rows(points, metric="mIoU"):
    return [{"point": name, "pause": None, "quality": q, "quality_lo": q - 0.01, "quality_hi": q + 0.01,
             "quality_metric": metric, "gflops_total_mean": c, "images_per_s": c, "images": 10}
            for name, c, q in points]


# (name, cost, quality); the same number stands for GFLOPs and for images/s
POINTS = [("A", 1.0, 0.5), ("B", 2.0, 0.4), ("C", 3.0, 0.7), ("D", 3.0, 0.6), ("E", 4.0, 0.7)]


def test_skyline_by_hand():
    # GFLOPs (fewer is better): A is cheapest; B costs more for less; C beats D at equal cost;
    # E costs more than C for the same quality
    assert [r["point"] for r in skyline_rows(_rows(POINTS), "gflops")] == ["A", "C"]
    # images/s (more is better): E is fastest and as good as any
    assert [r["point"] for r in skyline_rows(_rows(POINTS), "ips")] == ["E"]


def _sweep(tmp_path, name, rows):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "sweep.json").write_text(json.dumps({"rows": rows}))
    return folder


def test_command_writes_plots_and_skylines(tmp_path):
    a = _sweep(tmp_path, "a", _rows(POINTS))
    b = _sweep(tmp_path, "b", _rows([("F", 2.0, 0.8)]))
    result = invoke("skyline", a, b, "--label", "one", "--label", "two", "--out", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.strip().splitlines()[-1])
    assert [[r["point"] for r in s["skyline"]["gflops"]] for s in data["series"]] == [["A", "C"], ["F"]]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["skyline.json", "skyline_gflops.png",
                                                                     "skyline_ips.png"]


@pytest.mark.parametrize("case,expect", [
    ("labels", "2 labels for 1 sweeps"),
    ("metric", "different quality metrics"),
    ("missing", "no such sweep file"),
])
def test_bad_input_is_refused_in_one_line_and_nothing_written(tmp_path, case, expect):
    a = _sweep(tmp_path, "a", _rows(POINTS))
    args = {"labels": [a, "--label", "x", "--label", "y"],
            "metric": [a, _sweep(tmp_path, "b", _rows(POINTS, metric="PQ"))],
            "missing": [a, tmp_path / "nope"]}[case]
    result = invoke("skyline", *args, "--out", tmp_path / "out")
    assert result.exit_code != 0 and result.output.count("Error:") == 1, result.output
    assert expect in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()
