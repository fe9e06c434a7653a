"""Reading and validating COCO-panoptic files (JSON + PNGs) with errors that name the file.

COCO panoptic format: a JSON with ``images``, ``annotations`` (one per image: ``image_id``,
``file_name`` of the PNG, ``segments_info`` with ``id``, ``category_id``, ``iscrowd``,
``area``, ``bbox``) and ``categories`` (``id``, ``name``, ``isthing``, ``color``); PNGs whose
RGB encodes the segment id as ``R + 256 G + 256^2 B`` (0 = void).
"""

from __future__ import annotations

import json
import math
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


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_image_id(v) -> bool:
    # COCO numbers its images, Cityscapes names them ("frankfurt_000000_000294")
    return _is_int(v) or isinstance(v, str)


def _annotation_label(ann: dict) -> str:
    name = ann.get("file_name")
    return f"annotation {name}" if isinstance(name, str) else f"annotation of image_id {ann.get('image_id')!r}"


def check_panoptic_annotations(annotations, path: str, cat_ids: set, *, gt: bool) -> None:
    """Types and consistency of COCO-panoptic ``annotations``; DataError naming ``path`` and the
    annotation on the first problem.

    Every annotation is an object with an ``image_id`` (integer or string, each image once), a
    ``file_name`` string and a ``segments_info`` list; every segment an object with an integer
    ``id`` in 1..2^24-1 (unique in its image) and an integer ``category_id`` of ``cat_ids``.
    With ``gt`` the fields PQ reads from the ground truth are checked too: ``iscrowd`` 0 or 1,
    ``area`` a number >= 0, ``bbox`` four numbers (each where present).
    """
    if not isinstance(annotations, list):
        raise DataError(f"{path}: 'annotations' must be a list")
    seen_images: set = set()
    for ann in annotations:
        if not isinstance(ann, dict):
            raise DataError(f"{path}: annotation {str(ann)[:80]} is not an object")
        for key in ("image_id", "file_name", "segments_info"):
            if key not in ann:
                raise DataError(f"{path}: {_annotation_label(ann)} has no {key!r}")
        label = _annotation_label(ann)
        if not _is_image_id(ann["image_id"]):
            raise DataError(f"{path}: {label}: image_id {ann['image_id']!r} is neither an integer nor a string")
        if not isinstance(ann["file_name"], str) or not ann["file_name"]:
            raise DataError(f"{path}: {label}: file_name {ann['file_name']!r} is not a file name")
        if ann["image_id"] in seen_images:
            raise DataError(f"{path}: {label}: image_id {ann['image_id']!r} has more than one annotation")
        seen_images.add(ann["image_id"])
        if not isinstance(ann["segments_info"], list):
            raise DataError(f"{path}: {label}: segments_info must be a list")
        seen = set()
        for s in ann["segments_info"]:
            if not isinstance(s, dict) or "id" not in s or "category_id" not in s:
                raise DataError(f"{path}: {label}: segment without id/category_id: {str(s)[:80]}")
            sid, cid = s["id"], s["category_id"]
            if not _is_int(sid) or not 0 <= sid < OFFSET:
                raise DataError(f"{path}: {label}: segment id {sid!r} is not an integer in 1..{OFFSET - 1}")
            if sid == VOID:
                raise DataError(f"{path}: {label}: segment id 0 is reserved for void")
            if sid in seen:
                raise DataError(f"{path}: {label}: duplicate segment id {sid}")
            seen.add(sid)
            if not _is_int(cid) or cid not in cat_ids:
                raise DataError(f"{path}: {label}: segment {sid} has unknown category_id {cid!r}")
            if not gt:
                continue
            if "iscrowd" in s and not (_is_int(s["iscrowd"]) and s["iscrowd"] in (0, 1)):
                raise DataError(f"{path}: {label}: segment {sid} has iscrowd {s['iscrowd']!r} (must be 0 or 1)")
            if "area" in s and not (_is_number(s["area"]) and s["area"] >= 0):
                raise DataError(f"{path}: {label}: segment {sid} has area {s['area']!r} (must be a number >= 0)")
            if "bbox" in s and not (isinstance(s["bbox"], list) and len(s["bbox"]) == 4
                                    and all(_is_number(v) for v in s["bbox"])):
                raise DataError(f"{path}: {label}: segment {sid} has bbox {str(s['bbox'])[:60]} (must be 4 numbers)")


def check_panoptic_json(data: dict, path: str, *, need_images: bool = True) -> None:
    """Structural checks of a COCO-panoptic ground-truth JSON; DataError naming ``path`` on the
    first problem (categories with integer ids, each once; images with unique ids; the
    annotations as :func:`check_panoptic_annotations` with ``gt=True``)."""
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
        if not _is_int(c["id"]):
            raise DataError(f"{path}: category {c['name']!r} has id {c['id']!r}, not an integer")
        if c["id"] in cat_ids:
            raise DataError(f"{path}: category id {c['id']} is listed twice")
        cat_ids.add(c["id"])
    if isinstance(data.get("images"), list):
        image_ids: set = set()
        for img in data["images"]:
            if not isinstance(img, dict) or not _is_image_id(img.get("id")):
                raise DataError(f"{path}: image entry without an integer or string id: {str(img)[:80]}")
            if img["id"] in image_ids:
                raise DataError(f"{path}: image id {img['id']!r} is listed twice in 'images'")
            image_ids.add(img["id"])
    check_panoptic_annotations(data["annotations"], path, cat_ids, gt=True)


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
