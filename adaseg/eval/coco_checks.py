"""Checks of COCO instance files before pycocotools sees them: one DataError line naming the
file and the entry, never a traceback, a crash or a silently wrong score.

pycocotools trusts its input. A compressed RLE whose ``counts`` string is not RLE (e.g.
``"garbage!!"``) is decoded into run lengths that need not sum to the mask's size, and its C
decoder then writes past the mask (memory corruption) or scores nonsense; a missing
``height`` or a string ``category_id`` ends in a KeyError deep inside COCOeval. So every
field COCOeval reads is checked here, and every RLE is decoded in Python first
(:func:`rle_problem`, the same decoding as pycocotools' ``rleFrString``).
"""

from __future__ import annotations

import math

import numpy as np

from adaseg.data.panoptic_io import DataError


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_MAX_GROUPS = 7  # 35 bits: any run length of a mask below 2^34 pixels


def decode_rle_counts(counts: str) -> np.ndarray:
    """(n,) int64 run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``).

    Each count is written in 5-bit groups, least significant first, as characters
    ``chr(48 + group)``: bit 0x20 says another group follows, bit 0x10 of the last group is
    the sign. From the fourth count on, the value is a difference to the count two places
    before. Vectorised with numpy (a results file holds one string per detection). Raises
    ValueError for a character outside ``'0'..'o'``, a string that ends inside a count, or
    a count longer than any mask needs.
    """
    c = np.frombuffer(counts.encode("latin-1", errors="replace"), dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    bad = np.flatnonzero((c < 0) | (c >= 64))
    if bad.size:
        raise ValueError(f"character {counts[bad[0]]!r} is not an RLE character ('0'..'o')")
    last = (c & 0x20) == 0  # the last group of a count
    if not last[-1]:
        raise ValueError("the string ends inside a run length")
    number = np.concatenate(([0], np.cumsum(last)[:-1]))  # which count each group belongs to
    starts = np.flatnonzero(np.concatenate(([True], last[:-1])))
    k = np.arange(c.size) - starts[number]  # group index within its count
    if int(k.max()) >= _MAX_GROUPS:
        raise ValueError("a run length is longer than any mask")
    x = np.zeros(int(number[-1]) + 1, dtype=np.int64)
    np.add.at(x, number, (c & 0x1F) << (5 * k))
    ends = np.flatnonzero(last)
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.int64(1) << (5 * (k[ends][negative] + 1))  # sign extension of the last group
    # x[i] += out[i - 2] for i > 2: running sums over counts 1, 3, 5, ... and 2, 4, 6, ...
    out = x.copy()
    if x.size > 3:
        out[3::2] = x[1] + np.cumsum(x[3::2])
    if x.size > 4:
        out[4::2] = x[2] + np.cumsum(x[4::2])
    return out


def rle_problem(segm, size: tuple[int, int] | None = None, *, compressed_only: bool = False) -> str | None:
    """What is wrong with an RLE ``{"size": [h, w], "counts": str | list}``, or None.

    ``size``: the image's (height, width) the mask must have (None: not checked).
    ``compressed_only``: only string counts (what COCO results files hold) are accepted.
    """
    if not isinstance(segm, dict) or "size" not in segm or "counts" not in segm:
        return "segmentation is not an RLE object with 'size' and 'counts'"
    hw = segm["size"]
    if not (isinstance(hw, list) and len(hw) == 2 and all(_is_int(v) and v >= 1 for v in hw)):
        return f"RLE size {str(hw)[:40]} is not [height, width] of positive integers"
    if size is not None and tuple(hw) != tuple(size):
        return f"RLE size {hw} differs from the image's [height, width] {list(size)}"
    counts = segm["counts"]
    if isinstance(counts, bytes):  # pycocotools' own encode() output, in memory
        counts = counts.decode("latin-1")
    if isinstance(counts, str):
        try:
            runs = decode_rle_counts(counts)
        except ValueError as exc:
            return f"RLE counts {counts[:20]!r}: {exc}"
    elif isinstance(counts, list) and not compressed_only:
        if not all(_is_int(v) and 0 <= v <= hw[0] * hw[1] for v in counts):
            return f"RLE counts {str(counts)[:40]} are not all integers in 0..{hw[0] * hw[1]}"
        runs = np.asarray(counts, dtype=np.int64)
    else:
        what = "a string" if compressed_only else "a string or a list of integers"
        return f"RLE counts must be {what}, got {type(counts).__name__}"
    if runs.size and int(runs.min()) < 0:
        return f"RLE counts {str(counts)[:20]!r} decode to a negative run length"
    if int(runs.sum()) != hw[0] * hw[1]:
        return f"RLE counts {str(counts)[:20]!r} cover {int(runs.sum())} pixels, not the {hw[0]}x{hw[1]} of its size"
    return None


def _polygon_problem(segm) -> str | None:
    if not segm or not all(isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
                           and all(_is_number(v) for v in poly) for poly in segm):
        return "polygon segmentation must be lists of at least 3 x, y number pairs"
    return None


def check_instances_gt(gt: dict, name: str) -> None:
    """A COCO instances ground truth: ``images`` (unique ids, integer height and width),
    ``categories`` (unique integer ids) and ``annotations`` (unique ids, a listed image and
    category, ``iscrowd`` 0/1, ``area`` a number >= 0, an RLE or polygon ``segmentation`` of
    the image's size, optional ``bbox`` of 4 numbers). DataError naming ``name`` otherwise."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise DataError(f"{name}: missing top-level list {key!r}")
    sizes: dict = {}
    for img in gt["images"]:
        if not isinstance(img, dict) or not (_is_int(img.get("id")) or isinstance(img.get("id"), str)):
            raise DataError(f"{name}: image entry without an integer or string id: {str(img)[:80]}")
        if img["id"] in sizes:
            raise DataError(f"{name}: image id {img['id']!r} is listed twice")
        h, w = img.get("height"), img.get("width")
        if not (_is_int(h) and _is_int(w) and h >= 1 and w >= 1):
            raise DataError(f"{name}: image {img['id']!r} needs integer height and width >= 1 (got {h!r}, {w!r})")
        sizes[img["id"]] = (h, w)
    cat_ids = set()
    for c in gt["categories"]:
        if not isinstance(c, dict) or not _is_int(c.get("id")):
            raise DataError(f"{name}: category entry without an integer id: {str(c)[:80]}")
        if c["id"] in cat_ids:
            raise DataError(f"{name}: category id {c['id']} is listed twice")
        cat_ids.add(c["id"])
    ann_ids = set()
    for ann in gt["annotations"]:
        if not isinstance(ann, dict):
            raise DataError(f"{name}: annotation {str(ann)[:80]} is not an object")
        label = f"annotation {ann.get('id')!r}"
        if not _is_int(ann.get("id")) or ann["id"] in ann_ids:
            raise DataError(f"{name}: {label}: annotation ids must be unique integers")
        ann_ids.add(ann["id"])
        if ann.get("image_id") not in sizes or isinstance(ann.get("image_id"), bool):
            raise DataError(f"{name}: {label}: image_id {ann.get('image_id')!r} is not in its images")
        if not _is_int(ann.get("category_id")) or ann["category_id"] not in cat_ids:
            raise DataError(f"{name}: {label}: category_id {ann.get('category_id')!r} is not one of its categories")
        if not (_is_int(ann.get("iscrowd", 0)) and ann.get("iscrowd", 0) in (0, 1)):
            raise DataError(f"{name}: {label}: iscrowd {ann.get('iscrowd')!r} must be 0 or 1")
        if not (_is_number(ann.get("area")) and ann["area"] >= 0):
            raise DataError(f"{name}: {label}: area {ann.get('area')!r} must be a number >= 0")
        if "bbox" in ann and not (isinstance(ann["bbox"], list) and len(ann["bbox"]) == 4
                                  and all(_is_number(v) for v in ann["bbox"])):
            raise DataError(f"{name}: {label}: bbox {str(ann['bbox'])[:60]} must be 4 numbers")
        segm = ann.get("segmentation")
        problem = (_polygon_problem(segm) if isinstance(segm, list)
                   else rle_problem(segm, sizes[ann["image_id"]]))
        if problem:
            raise DataError(f"{name}: {label}: {problem}")


def check_results(results: list, gt: dict, *, name: str, gt_name: str) -> None:
    """COCO segmentation results against a checked ground truth: each an object with a GT
    ``image_id``, one of its ``category_id``s, a finite ``score``, a compressed RLE of the
    image's size and, where present, a ``bbox`` of 4 numbers. DataError naming ``name``
    and the result's index otherwise."""
    sizes = {img["id"]: (img["height"], img["width"]) for img in gt["images"]}
    cat_ids = {c["id"] for c in gt["categories"]}
    for i, r in enumerate(results):
        label = f"result {i}"
        if not isinstance(r, dict):
            raise DataError(f"{name}: {label} is not an object")
        image_id = r.get("image_id")
        if isinstance(image_id, bool) or image_id not in sizes:
            raise DataError(f"{name}: {label}: image_id {image_id!r} is not in {gt_name}")
        if not _is_int(r.get("category_id")) or r["category_id"] not in cat_ids:
            raise DataError(f"{name}: {label}: category_id {r.get('category_id')!r} is not a category of {gt_name}")
        if not _is_number(r.get("score")):
            raise DataError(f"{name}: {label}: score {r.get('score')!r} must be a finite number")
        if "bbox" in r and not (isinstance(r["bbox"], list) and len(r["bbox"]) == 4
                                and all(_is_number(v) for v in r["bbox"])):
            raise DataError(f"{name}: {label}: bbox {str(r['bbox'])[:60]} must be 4 numbers")
        if ("bbox" in r) != ("bbox" in results[0]) and "bbox" in results[0]:
            # pycocotools takes the first result's keys for all: its areas from boxes
            raise DataError(f"{name}: {label} has no bbox although result 0 has one (give all results a bbox or none)")
        problem = rle_problem(r.get("segmentation"), sizes[image_id], compressed_only=True)
        if problem:
            raise DataError(f"{name}: {label} (image_id {image_id!r}): {problem}")
