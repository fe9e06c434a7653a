"""Cityscapes panoptic (gtFine) in the format written by cityscapesscripts' csCreatePanopticImgs.

Layout (``S`` = train / val)::

    ROOT/leftImg8bit/S/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/cityscapes_panoptic_S.json       (or cityscapes_panoptic_S_trainId.json)
    ROOT/gtFine/cityscapes_panoptic_S/*.png      (or cityscapes_panoptic_S_trainId/)

Categories (19 evaluated classes, thing = hasInstances) come from
``cityscapesscripts.helpers.labels``; the JSON's categories must agree with them.
"""

from __future__ import annotations

import os

from adaseg.data.dataset import Record
from adaseg.data.meta import Category, DatasetMeta
from adaseg.data.panoptic_io import DataError, check_panoptic_json, load_json


def cityscapes_meta(*, use_train_id: bool) -> DatasetMeta:
    """The 19 evaluated Cityscapes classes; category id = label id (or trainId)."""
    from cityscapesscripts.helpers.labels import labels

    cats = [Category(id=int(lab.trainId if use_train_id else lab.id), name=lab.name,
                     isthing=bool(lab.hasInstances), color=tuple(lab.color))
            for lab in labels if not lab.ignoreInEval]
    return DatasetMeta(name="cityscapes", task="panoptic", categories=tuple(sorted(cats, key=lambda c: c.id)))


def load_cityscapes_split(root: str, split: str) -> tuple[DatasetMeta, list[Record]]:
    """-> (meta, records). DataError naming the file for missing folders/JSON or mismatches."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: Cityscapes folder not found")
    gt = os.path.join(root, "gtFine")
    plain = os.path.join(gt, f"cityscapes_panoptic_{split}.json")
    train_id = os.path.join(gt, f"cityscapes_panoptic_{split}_trainId.json")
    if os.path.isfile(plain):
        json_path, use_train_id = plain, False
    elif os.path.isfile(train_id):
        json_path, use_train_id = train_id, True
    else:
        raise DataError(f"{plain}: Cityscapes panoptic JSON not found (create it with cityscapesscripts' "
                        "csCreatePanopticImgs)")
    png_dir = json_path[: -len(".json")]
    image_root = os.path.join(root, "leftImg8bit", split)
    for d in (png_dir, image_root):
        if not os.path.isdir(d):
            raise DataError(f"{d}: folder not found (expected by {json_path})")
    data = load_json(json_path, what="Cityscapes panoptic")
    check_panoptic_json(data, json_path)
    meta = cityscapes_meta(use_train_id=use_train_id)
    expected = {c.id: c.name for c in meta.categories}
    got = {int(c["id"]): c["name"] for c in data["categories"]}
    if got != expected:
        raise DataError(f"{json_path}: categories differ from cityscapesscripts' labels "
                        f"(expected {sorted(expected)} got {sorted(got)})")
    images = {img["id"] for img in data["images"]}
    records = []
    for ann in data["annotations"]:
        if ann["image_id"] not in images:
            raise DataError(f"{json_path}: annotation {ann['file_name']} has no entry in 'images'")
        # the converter's "file_name" for images reads <id>_gtFine_leftImg8bit.png, which is not
        # the image's name; the image is <id>_leftImg8bit.png in leftImg8bit/S/<city>/
        city = str(ann["image_id"]).split("_")[0]
        records.append(Record(image_id=ann["image_id"],
                              image_path=os.path.join(image_root, city, f"{ann['image_id']}_leftImg8bit.png"),
                              label_path=os.path.join(png_dir, ann["file_name"]),
                              segments=tuple(ann["segments_info"])))
    if not records:
        raise DataError(f"{json_path}: no annotations (empty dataset)")
    return meta, records
