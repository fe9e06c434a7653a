"""The RLE checks decode exactly what pycocotools encodes, and refuse what it would misread."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from adaseg.eval.coco_checks import decode_rle_counts, rle_problem


def _runs(mask: np.ndarray) -> list[int]:
    """Run lengths of a mask in column-major order, starting with a run of zeros (the oracle)."""
    flat = mask.flatten(order="F").astype(int)
    runs, current, n = [], 0, 0
    for v in flat:
        if v != current:
            runs.append(n)
            current, n = v, 0
        n += 1
    runs.append(n)
    return runs


def test_decoding_matches_the_masks_runs():
    rng = np.random.default_rng(0)
    for t in range(300):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        mask = rng.uniform(size=(h, w)) < rng.uniform()
        if t % 5 == 0:
            mask[:] = t % 2 == 0  # all background / all foreground
        counts = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")
        assert decode_rle_counts(counts).tolist() == _runs(mask)
        assert rle_problem({"size": [h, w], "counts": counts}) is None


def test_long_runs_and_negative_differences():
    # a large mask with one long run then short ones: counts beyond 2^15 and differences < 0
    mask = np.zeros((300, 400), dtype=bool)
    mask[:, 200:] = True
    mask[5, 10] = True
    counts = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")
    assert decode_rle_counts(counts).tolist() == _runs(mask)


@pytest.mark.parametrize(
    "segm, size, expect",
    [
        ({"size": [4, 5], "counts": "garbage!!"}, None, "is not an RLE character"),
        ({"size": [4, 5], "counts": "0o"}, None, "ends inside a run length"),
        ({"size": [4, 5], "counts": "1"}, None, "cover 1 pixels, not the 4x5"),
        ({"size": [4, 5], "counts": "oooooooo0"}, None, "longer than any mask"),
        ({"size": [4, 5], "counts": [25, -5]}, None, "are not all integers"),
        ({"size": [4, 5], "counts": [10, 10]}, (5, 4), "differs from the image's"),
        ({"size": [4], "counts": "4"}, None, "is not [height, width]"),
        ({"counts": "4"}, None, "not an RLE object"),
    ],
)
def test_malformed_rles_are_named(segm, size, expect):
    problem = rle_problem(segm, size)
    assert problem is not None and expect in problem, problem


def test_a_negative_run_is_refused():
    # a zero run, then one group with the sign bit 0x10 set: -16
    counts = "0" + chr(48 + 0x10)  # runs [0, -16]
    assert decode_rle_counts(counts).tolist() == [0, -16]
    assert "negative run length" in rle_problem({"size": [1, 1], "counts": counts})
