"""COCO-panoptic-format folders: the built-in synthetic set, COCO panoptic, any plain folder.

Layout (detectron2's, with ``S`` = the split name; COCO uses ``train2017`` / ``val2017``)::

    ROOT/annotations/panoptic_S.json    images / annotations / categories
    ROOT/panoptic_S/*.png               panoptic PNGs (id = R + 256 G + 256^2 B)
    ROOT/S/*.{jpg,png}                  images
    ROOT/panoptic_semseg_S/*.png        optional semantic PNGs (contiguous ids, 255 = void)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from adaseg.data.dataset import Record
from adaseg.data.meta import DatasetMeta
from adaseg.data.panoptic_io import DataError, check_panoptic_json, load_json


@dataclass(frozen=True)
class PanopticLayout:
    """Paths of one split of a COCO-panoptic folder."""

    root: str
    split: str

    @property
    def json_path(self) -> str:
        return os.path.join(self.root, "annotations", f"panoptic_{self.split}.json")

    @property
    def png_dir(self) -> str:
        return os.path.join(self.root, f"panoptic_{self.split}")

    @property
    def image_dir(self) -> str:
        return os.path.join(self.root, self.split)

    @property
    def semantic_dir(self) -> str:
        return os.path.join(self.root, f"panoptic_semseg_{self.split}")


def load_panoptic_split(layout: PanopticLayout, *, name: str) -> tuple[DatasetMeta, list[Record], dict]:
    """Read and check ``layout``'s JSON -> (meta, records sorted as the JSON's annotations, json).

    Raises DataError naming the file for a missing folder/JSON, malformed JSON, annotations
    without image entries, unknown category ids or an empty split.
    """
    if not os.path.isdir(layout.root):
        raise DataError(f"{layout.root}: dataset folder not found")
    data = load_json(layout.json_path, what="panoptic annotation")
    check_panoptic_json(data, layout.json_path)
    for d in (layout.png_dir, layout.image_dir):
        if not os.path.isdir(d):
            raise DataError(f"{d}: folder not found (expected by {layout.json_path})")
    meta = DatasetMeta.from_categories_json(name=name, task="panoptic", categories=data["categories"])
    images = {img["id"]: img for img in data["images"]}
    records = []
    for ann in data["annotations"]:
        img = images.get(ann["image_id"])
        if img is None:
            raise DataError(f"{layout.json_path}: annotation {ann['file_name']} has image_id {ann['image_id']!r} "
                            "with no entry in 'images'")
        records.append(Record(
            image_id=ann["image_id"],
            image_path=os.path.join(layout.image_dir, img["file_name"]),
            label_path=os.path.join(layout.png_dir, ann["file_name"]),
            segments=tuple(ann["segments_info"]),
            difficulty=img.get("difficulty"),
        ))
    if not records:
        raise DataError(f"{layout.json_path}: no annotations (empty dataset)")
    return meta, records, data
