"""The derived dataset: round trip, validation, utilities recomputed from per-class parts."""

from __future__ import annotations

import json
import math

import pytest
import torch

from adaseg.runs.derived import DerivedDataset, DerivedDatasetError, best_exit_histogram, stack_parts


def _parts_example():
    """Two images, exits (2, 4), PQ parts by hand.

    image 0, exit 2: class 1 tp=1 fp=0 fn=0 iou=0.8; class 5 tp=0 fp=1 fn=0
        PQ = (0.8/1 + 0/0.5)/2 = 0.4; SQ = 0.8 (only class 1 has tp); RQ = (1 + 0)/2 = 0.5
    image 0, exit 4: class 1 tp=2 fp=0 fn=1 iou=1.5 -> PQ = 1.5/2.5 = 0.6, SQ = 0.75, RQ = 0.8
    image 1, exit 2: nothing (empty ground truth, empty prediction) -> undefined
    image 1, exit 4: class 3 tp=0 fp=2 fn=0 -> PQ = 0, SQ undefined, RQ = 0
    """
    rows = [
        (0, 0, 1, (1, 0, 0, 0.8)),
        (0, 0, 5, (0, 1, 0, 0.0)),
        (0, 1, 1, (2, 0, 1, 1.5)),
        (1, 1, 3, (0, 2, 0, 0.0)),
    ]
    index, values = stack_parts(rows, 4)
    q = torch.tensor([[0.4, 0.6], [math.nan, 0.0]], dtype=torch.float64)
    return DerivedDataset(
        exits=[2, 4], quality=q, features=torch.randn(2, 3), metric="pq", depth=4,
        parent_fingerprint="f" * 64, image_ids=["a", "b"], parts_index=index, parts_values=values,
        info={"split": "train"},
    )


def _same(a, b):
    return torch.equal(torch.isnan(a), torch.isnan(b)) and torch.allclose(
        torch.nan_to_num(a, nan=-1.0), torch.nan_to_num(b, nan=-1.0)
    )


def test_roundtrip_keeps_nan_and_parts(tmp_path):
    d = _parts_example()
    path = d.save(tmp_path / "derived.safetensors")
    back = DerivedDataset.load(path)
    assert back.exit_list == [2, 4] and back.depth == 4 and back.image_ids == ["a", "b"]
    assert _same(back.quality, d.quality)
    assert torch.equal(back.features, d.features)
    assert torch.equal(back.parts_index, d.parts_index) and torch.equal(back.parts_values, d.parts_values)
    assert back.info == {"split": "train"} and back.fingerprint() == d.fingerprint()
    summary = json.loads((tmp_path / "derived.json").read_text())
    assert summary["undefined_per_exit"] == [1, 0] and summary["num_images"] == 2
    assert summary["best_exit_histogram"] == {"2": 0, "4": 2, "undefined": 0}


@pytest.mark.parametrize(
    "utility, expected",
    [
        ("pq", [[0.4, 0.6], [math.nan, 0.0]]),
        ("sq", [[0.8, 0.75], [math.nan, math.nan]]),
        ("rq", [[0.5, 0.8], [math.nan, 0.0]]),
    ],
)
def test_quality_from_parts_by_hand(utility, expected):
    got = _parts_example().quality_from_parts(utility)
    assert _same(got, torch.tensor(expected, dtype=torch.float64))


def test_miou_parts():
    index, values = stack_parts([(0, 0, 0, (5, 10)), (0, 0, 2, (3, 3)), (0, 1, 0, (0, 4))], 2)
    d = DerivedDataset(exits=[1, 2], quality=torch.tensor([[0.75, 0.0]]), features=torch.zeros(1, 2),
                       metric="miou", depth=2, parent_fingerprint="x", image_ids=["a"],
                       parts_index=index, parts_values=values)
    assert torch.allclose(d.quality_from_parts("miou"), torch.tensor([[0.75, 0.0]], dtype=torch.float64))
    with pytest.raises(DerivedDatasetError, match="not available"):
        d.quality_from_parts("pq")


def test_histogram_ties_go_to_earliest_exit():
    q = torch.tensor([[0.5, 0.5, 0.4], [0.1, 0.2, 0.3], [math.nan, math.nan, math.nan], [math.nan, 0.2, 0.1]])
    d = DerivedDataset(exits=[2, 3, 4], quality=q, features=torch.zeros(4, 1), metric="pq", depth=4,
                       parent_fingerprint="x", image_ids=list("abcd"))
    assert best_exit_histogram(d) == {"2": 1, "3": 1, "4": 1, "undefined": 1}


def _kwargs(**over):
    base = dict(exits=[2, 3], quality=torch.full((2, 2), 0.5), features=torch.zeros(2, 4), metric="pq",
                depth=3, parent_fingerprint="x", image_ids=["a", "b"])
    base.update(over)
    return base


@pytest.mark.parametrize(
    "over, match",
    [
        ({"metric": "ap"}, "metric must be one of"),
        ({"exits": [3, 2]}, "exits must increase"),
        ({"exits": [2, 4]}, "exits must increase within 1..3"),
        ({"quality": torch.full((2, 3), 0.5)}, r"quality must be \(N, 2\)"),
        ({"quality": torch.tensor([[0.5, 1.5], [0.1, 0.2]])}, r"quality must lie in \[0, 1\]"),
        ({"features": torch.zeros(3, 4)}, r"features must be \(N=2, C\)"),
        ({"features": torch.full((2, 4), math.inf)}, "NaN or inf"),
        ({"image_ids": ["a"]}, "1 image ids for 2 images"),
        ({"parts_index": torch.zeros(1, 3, dtype=torch.long)}, "given together"),
        ({"parts_index": torch.tensor([[5, 0, 0]]), "parts_values": torch.zeros(1, 4)}, "out of range"),
        ({"parts_index": torch.zeros(1, 3, dtype=torch.long), "parts_values": torch.zeros(1, 2)}, r"\(M, 4\)"),
    ],
)
def test_validation_messages(over, match):
    with pytest.raises(DerivedDatasetError, match=match):
        DerivedDataset(**_kwargs(**over))


def test_load_errors(tmp_path):
    with pytest.raises(DerivedDatasetError, match="does not exist"):
        DerivedDataset.load(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(DerivedDatasetError, match="not readable"):
        DerivedDataset.load(bad)
