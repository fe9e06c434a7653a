"""Reading and validating COCO-panoptic files (JSON + PNGs) with errors that name the file.

COCO panoptic format: a JSON with ``images``, ``annotations`` (one per image: ``image_id``,
``file_name`` of the PNG, ``segments_info`` with ``id``, ``category_id``, ``iscrowd``,
``area``, ``bbox``) and ``categories`` (``id``, ``name``, ``isthing``, ``color``); PNGs whose
RGB encodes the segment id as ``R + 256 G + 256^2 B`` (0 = void).
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

VOID = 0
OFFSET = 256 * 256 * 256  # ids are 24-bit; gt * OFFSET + pred is unique for every pair


class DataError(ValueError):
    """Malformed or missing dataset / prediction file. ``str()`` is one line naming the file."""


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int64 segment ids ``R + 256 G + 256^2 B``."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id2rgb(id_map: np.ndarray) -> np.ndarray:
    """(H, W) integer ids (< 2^24) -> (H, W, 3) uint8."""
    id_map = np.asarray(id_map, dtype=np.int64)
    if id_map.size and (id_map.min() < 0 or id_map.max() >= OFFSET):
        raise ValueError("segment ids must be in [0, 2^24)")
    out = np.empty(id_map.shape + (3,), dtype=np.uint8)
    out[..., 0] = id_map % 256
    out[..., 1] = (id_map // 256) % 256
    out[..., 2] = id_map // (256 * 256)
    return out


def load_json(path: str, *, what: str = "JSON") -> dict:
    """Read a JSON object; DataError naming ``path`` when missing or malformed."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: {what} file not found")
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: malformed JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object at top level, got {type(data).__name__}")
    return data


def read_panoptic_png(path: str) -> np.ndarray:
    """Panoptic PNG -> (H, W) int64 ids. DataError naming ``path`` when unreadable or not RGB."""
    arr = _read_png(path)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise DataError(f"{path}: panoptic PNG must be RGB, got array of shape {arr.shape}")
    return rgb2id(arr[..., :3])


def read_label_png(path: str) -> np.ndarray:
    """Single-channel label PNG -> (H, W) int64. DataError naming ``path`` when not 2-D."""
    arr = _read_png(path)
    if arr.ndim != 2:
        raise DataError(f"{path}: label PNG must be single-channel, got array of shape {arr.shape}")
    return arr.astype(np.int64)


def read_image(path: str) -> np.ndarray:
    """Image file -> (H, W, 3) uint8 RGB."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # writable: torch.from_numpy needs it
    except OSError as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None


def _read_png(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise DataError(f"{path}: PNG file not found")
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except OSError as exc:
        raise DataError(f"{path}: unreadable PNG ({exc})") from None


def check_panoptic_json(data: dict, path: str, *, need_images: bool = True) -> None:
    """Structural checks of a COCO-panoptic JSON; DataError naming ``path`` on the first problem."""
    required = ("annotations", "categories") + (("images",) if need_images else ())
    for key in required:
        if key not in data:
            raise DataError(f"{path}: missing top-level key {key!r}")
        if not isinstance(data[key], list):
            raise DataError(f"{path}: {key!r} must be a list")
    cat_ids = set()
    for c in data["categories"]:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise DataError(f"{path}: category entry without id/name: {c!r}")
        cat_ids.add(int(c["id"]))
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or "image_id" not in ann or "file_name" not in ann or "segments_info" not in ann:
            raise DataError(f"{path}: annotation without image_id/file_name/segments_info: {str(ann)[:120]}")
        seen = set()
        for s in ann["segments_info"]:
            if "id" not in s or "category_id" not in s:
                raise DataError(f"{path}: segment without id/category_id in {ann['file_name']}")
            if int(s["category_id"]) not in cat_ids:
                raise DataError(f"{path}: {ann['file_name']}: segment {s['id']} has unknown category_id "
                                f"{s['category_id']}")
            if int(s["id"]) in seen:
                raise DataError(f"{path}: {ann['file_name']}: duplicate segment id {s['id']}")
            if int(s["id"]) == VOID:
                raise DataError(f"{path}: {ann['file_name']}: segment id 0 is reserved for void")
            seen.add(int(s["id"]))


def check_ids_match(id_map: np.ndarray, segments: list[dict], png_path: str) -> np.ndarray:
    """Every non-void PNG id has a JSON segment and every JSON segment appears in the PNG.

    Returns the ids present in the PNG (sorted, void included if present) with their counts
    as a (2, n) array; DataError naming ``png_path`` otherwise.
    """
    ids, counts = np.unique(id_map, return_counts=True)
    json_ids = {int(s["id"]) for s in segments}
    png_ids = {int(i) for i in ids if i != VOID}
    missing_in_json = sorted(png_ids - json_ids)
    if missing_in_json:
        raise DataError(f"{png_path}: segment ids {missing_in_json[:10]} are in the PNG but not in the JSON")
    missing_in_png = sorted(json_ids - png_ids)
    if missing_in_png:
        raise DataError(f"{png_path}: segment ids {missing_in_png[:10]} are in the JSON but not in the PNG")
    return np.stack([ids, counts])
