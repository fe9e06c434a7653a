"""ADE20K SceneParsing (150 classes), semantic segmentation.

Layout (the ADEChallengeData2016 archive; ``S`` = training / validation, also accepted as
train / val)::

    ROOT/images/S/*.jpg
    ROOT/annotations/S/*.png      value k in 1..150 = class k, 0 = void ("other")
    ROOT/objectInfo150.txt        optional: class names (tab-separated Idx Ratio Train Val Name)

Category id = label value (1..150); contiguous id = value - 1; void -> 255 (the
``reduce_zero_label`` convention of Segmenter / mmseg / Mask2Former).
"""

from __future__ import annotations

import os

from adaseg.data.dataset import Record
from adaseg.data.meta import Category, DatasetMeta, fallback_color
from adaseg.data.panoptic_io import DataError

NUM_CLASSES = 150
_SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}


def ade20k_meta(root: str) -> DatasetMeta:
    """150 categories; names from ROOT/objectInfo150.txt (or .csv) when present, else ``class_<k>``."""
    names = {k: f"class_{k}" for k in range(1, NUM_CLASSES + 1)}
    for fname in ("objectInfo150.txt", "objectInfo150.csv"):
        path = os.path.join(root, fname)
        if os.path.isfile(path):
            names.update(_read_object_info(path))
            break
    cats = tuple(Category(id=k, name=names[k], isthing=False, color=fallback_color(k))
                 for k in range(1, NUM_CLASSES + 1))
    return DatasetMeta(name="ade20k", task="semantic", categories=cats)


def _read_object_info(path: str) -> dict[int, str]:
    sep = "," if path.endswith(".csv") else "\t"
    out = {}
    with open(path) as f:
        lines = f.read().splitlines()
    for line in lines[1:]:
        parts = [p.strip() for p in line.split(sep)]
        if len(parts) < 5 or not parts[0].isdigit():
            raise DataError(f"{path}: malformed line {line!r} (expected Idx{sep}Ratio{sep}Train{sep}Val{sep}Name)")
        out[int(parts[0])] = parts[-1].split(";")[0]
    return out


def load_ade20k_split(root: str, split: str) -> tuple[DatasetMeta, list[Record]]:
    if split not in _SPLITS:
        raise DataError(f"ade20k: unknown split {split!r} (use one of {sorted(_SPLITS)})")
    sub = _SPLITS[split]
    image_dir = os.path.join(root, "images", sub)
    label_dir = os.path.join(root, "annotations", sub)
    for d in (root, image_dir, label_dir):
        if not os.path.isdir(d):
            raise DataError(f"{d}: ADE20K folder not found")
    stems = sorted(os.path.splitext(f)[0] for f in os.listdir(image_dir) if f.lower().endswith((".jpg", ".png")))
    records = []
    for stem in stems:
        image = os.path.join(image_dir, stem + ".jpg")
        if not os.path.isfile(image):
            image = os.path.join(image_dir, stem + ".png")
        label = os.path.join(label_dir, stem + ".png")
        if not os.path.isfile(label):
            raise DataError(f"{label}: annotation missing for image {image}")
        records.append(Record(image_id=stem, image_path=image, label_path=label, segments=None))
    if not records:
        raise DataError(f"{image_dir}: no images (empty dataset)")
    return ade20k_meta(root), records
