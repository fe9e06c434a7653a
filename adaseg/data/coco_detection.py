"""COCO detection folders (``--data coco-det:ROOT``): an instances JSON + its images.

Layout (COCO's; ``S`` = the split name, ``train2017`` / ``val2017`` as the ``coco:ROOT``
panoptic reader spells them, or plain ``train`` / ``val`` as in a folder written by
``adaseg data synth``, which writes ``instances_{train,val}.json`` beside its panoptic JSON)::

    ROOT/annotations/instances_S.json    images / annotations / categories
    ROOT/S/*.{jpg,png}                   images

What is checked on loading (DataError, one line naming the file and the entry): the JSON is
an object with lists ``images`` (at least one: a split without images is no dataset),
``annotations`` (may be empty: images without objects are valid negatives) and
``categories`` (at least one); every image has ``id``, ``file_name``, positive ``height`` /
``width`` and its file on disk; every annotation has ``id``, a known ``image_id``, a known
``category_id``, ``bbox`` [x, y, w, h] of finite numbers with w, h >= 0 inside its image
(within :data:`BORDER_TOLERANCE` pixels), a number ``area`` (COCOeval's size ranges read
it) and ``iscrowd`` 0 / 1 (COCOeval's bbox IoU reads it: a file without it cannot be scored).

Every category is a detection class (things): contiguous ids follow the categories sorted
by id, so COCO's 80 categories (ids 1..90 with gaps) become 0..79.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from adaseg.data.meta import DatasetMeta
from adaseg.data.panoptic_io import DataError, load_json

BORDER_TOLERANCE = 1.0
"""Pixels a box may reach past the image border (COCO's boxes come from float polygons);
such a box is clipped to the image when it becomes a training target."""


ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox", "area", "iscrowd")
"""The annotation fields a record keeps and requires (COCOeval's bbox evaluation reads these
and no others)."""


@dataclass(frozen=True)
class DetectionLayout:
    """Paths of one split of a COCO detection folder."""

    root: str
    split: str

    @property
    def json_path(self) -> str:
        return os.path.join(self.root, "annotations", f"instances_{self.split}.json")

    @property
    def image_dir(self) -> str:
        return os.path.join(self.root, self.split)


@dataclass(frozen=True)
class DetRecord:
    """One image and its COCO annotations (the JSON's dicts, in file order).

    ``label_path`` is empty (the labels are in the JSON; :func:`adaseg.runs.run_data.images_identity`
    hashes ``annotations`` with the record's other fields)."""

    image_id: object
    image_path: str
    height: int
    width: int
    annotations: tuple
    label_path: str = ""
    difficulty: float | None = None


def detection_layout(root: str, split: str) -> DetectionLayout:
    """The layout of ``split`` ('train' / 'val') under ``root``: ``S = split + '2017'`` (COCO)
    when ``instances_{split}2017.json`` exists, else plain ``split`` when
    ``instances_{split}.json`` does; DataError naming COCO's file when neither does."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: dataset folder not found")
    coco = DetectionLayout(root, split + "2017")
    if os.path.isfile(coco.json_path):
        return coco
    plain = DetectionLayout(root, split)
    if os.path.isfile(plain.json_path):
        return plain
    raise DataError(f"{coco.json_path}: COCO instances JSON not found (nor {plain.json_path})")


def load_detection_split(layout: DetectionLayout, *, name: str) -> tuple[DatasetMeta, list[DetRecord], dict]:
    """Read and check ``layout``'s instances JSON -> (meta with task 'detection', one record
    per image in the JSON's ``images`` order, the JSON). DataError as the module says."""
    path = layout.json_path
    data = load_json(path, what="COCO instances")
    check_instances_json(data, path)
    if not os.path.isdir(layout.image_dir):
        raise DataError(f"{layout.image_dir}: folder not found (expected by {path})")
    cats = [{"id": c["id"], "name": c["name"], "isthing": 1} for c in data["categories"]]
    try:
        meta = DatasetMeta.from_categories_json(name=name, task="detection", categories=cats)
    except ValueError as exc:  # e.g. more categories than fit below the ignore label
        raise DataError(f"{path}: unusable categories ({exc})") from None
    per_image: dict = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        # only what box evaluation reads: COCO's polygons would multiply the records' memory
        per_image[ann["image_id"]].append({k: ann[k] for k in ANNOTATION_KEYS})
    records = []
    for img in data["images"]:
        image_path = os.path.join(layout.image_dir, img["file_name"])
        if not os.path.isfile(image_path):
            raise DataError(f"{image_path}: image {img['id']!r} listed in {path} is missing on disk")
        records.append(DetRecord(image_id=img["id"], image_path=image_path, height=int(img["height"]),
                                 width=int(img["width"]), annotations=tuple(per_image[img["id"]]),
                                 difficulty=img.get("difficulty")))
    return meta, records, data


def check_instances_json(data: dict, path: str) -> None:
    """DataError (one line naming ``path`` and the entry) unless ``data`` is a usable COCO
    instances dict (see the module docstring)."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing or non-list {key!r} (a COCO instances JSON has images, annotations "
                            "and categories)")
    if not data["images"]:
        raise DataError(f"{path}: no images (a split needs at least one; images without objects are fine)")
    if not data["categories"]:
        raise DataError(f"{path}: no categories")
    cat_ids = set()
    for c in data["categories"]:
        if not isinstance(c, dict) or not _is_int(c.get("id")) or not isinstance(c.get("name"), str):
            raise DataError(f"{path}: category {c!r} needs an integer 'id' and a string 'name'")
        if c["id"] in cat_ids:
            raise DataError(f"{path}: category id {c['id']} appears twice")
        cat_ids.add(c["id"])
    sizes = {}
    for img in data["images"]:
        if not isinstance(img, dict) or not _is_id(img.get("id")) or not isinstance(img.get("file_name"), str):
            raise DataError(f"{path}: image entry {_short(img)} needs an integer or string 'id' and a 'file_name'")
        if not (_is_int(img.get("height")) and _is_int(img.get("width")) and img["height"] > 0 and img["width"] > 0):
            raise DataError(f"{path}: image {img['id']!r} needs positive integer 'height' and 'width'")
        if img["id"] in sizes:
            raise DataError(f"{path}: image id {img['id']!r} appears twice")
        sizes[img["id"]] = (img["height"], img["width"])
    ann_ids = set()
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            raise DataError(f"{path}: annotation {_short(ann)} is not an object")
        missing = [k for k in ANNOTATION_KEYS if k not in ann]
        if missing:
            raise DataError(f"{path}: annotation {ann.get('id', _short(ann))!r} lacks {', '.join(missing)}")
        if not all(_is_id(ann[k]) for k in ("id", "image_id", "category_id")):
            raise DataError(f"{path}: annotation {_short(ann)}: id, image_id and category_id must be integers or "
                            "strings")
        where = f"{path}: annotation {ann['id']!r} (image {ann['image_id']!r})"
        if ann["id"] in ann_ids:
            raise DataError(f"{path}: annotation id {ann['id']!r} appears twice")
        ann_ids.add(ann["id"])
        if ann["image_id"] not in sizes:
            raise DataError(f"{where}: image_id has no entry in 'images'")
        if ann["category_id"] not in cat_ids:
            raise DataError(f"{where}: unknown category_id {ann['category_id']!r} (not in 'categories')")
        box = ann["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(_is_finite(v) for v in box)):
            raise DataError(f"{where}: bbox {box!r} is not [x, y, w, h] of 4 finite numbers")
        if not _is_finite(ann["area"]) or ann["area"] < 0:
            raise DataError(f"{where}: area {ann['area']!r} is not a non-negative number")
        if ann["iscrowd"] not in (0, 1) or isinstance(ann["iscrowd"], bool):
            raise DataError(f"{where}: iscrowd {ann['iscrowd']!r} is not 0 or 1")
        x, y, w, h = (float(v) for v in box)
        height, width = sizes[ann["image_id"]]
        t = BORDER_TOLERANCE
        if w < 0 or h < 0:
            raise DataError(f"{where}: bbox {box} has a negative width or height")
        if x < -t or y < -t or x + w > width + t or y + h > height + t:
            raise DataError(f"{where}: bbox {box} lies outside the {width}x{height} image")


def instances_from_panoptic(panoptic: dict) -> dict:
    """A COCO instances dict from a COCO-panoptic one: each thing segment becomes an
    annotation with the segment's ``bbox`` (tight, pixel edges), ``area`` (pixel count) and
    ``iscrowd``; categories are the thing categories; every image is kept (also those
    without things). Annotation ids count from 1 in file order. ``area`` and ``bbox`` are
    what the panoptic JSON records (``adaseg data check`` verifies areas against the PNGs)."""
    things = [c for c in panoptic["categories"] if c.get("isthing", 0)]
    thing_ids = {c["id"] for c in things}
    images = [{k: v for k, v in img.items()} for img in panoptic["images"]]
    anns = []
    for ann in panoptic["annotations"]:
        for s in ann["segments_info"]:
            if s["category_id"] in thing_ids and s["area"] > 0:
                anns.append({"id": len(anns) + 1, "image_id": ann["image_id"], "category_id": s["category_id"],
                             "bbox": [float(v) for v in s["bbox"]], "area": float(s["area"]),
                             "iscrowd": int(s.get("iscrowd", 0))})
    info = dict(panoptic.get("info", {}))
    info["description"] = str(info.get("description", "")) + " (thing segments as boxes)"
    return {"info": info, "images": images, "annotations": anns,
            "categories": [{"id": c["id"], "name": c["name"], "supercategory": c.get("supercategory", "")}
                           for c in things]}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_id(v) -> bool:
    return isinstance(v, str) or _is_int(v)


def _is_finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
