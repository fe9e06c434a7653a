"""A tiny COCO detection folder written by hand for the coco-det tests (pillow images + an
instances JSON in COCO's layout: ROOT/annotations/instances_{split}2017.json, ROOT/{split}2017/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# category ids with gaps and out of order, as COCO's: contiguous ids by sorted id (1->0, 3->1, 7->2)
CATEGORIES = [{"id": 7, "name": "kite"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
CONTIGUOUS = {1: 0, 3: 1, 7: 2}
# (file, height, width); image 3 has no annotations (a valid negative)
IMAGES = [("a.png", 40, 60), ("b.jpg", 48, 36), ("c.png", 32, 32)]
ANNOTATIONS = [
    {"id": 11, "image_id": 1, "category_id": 3, "bbox": [5.0, 6.0, 20.0, 12.0], "area": 240.0, "iscrowd": 0},
    {"id": 12, "image_id": 1, "category_id": 1, "bbox": [30.0, 4.0, 25.0, 30.0], "area": 700.0, "iscrowd": 1},
    {"id": 13, "image_id": 1, "category_id": 7, "bbox": [40.5, 20.25, 19.5, 19.75], "area": 300.0,
     "iscrowd": 0},
    {"id": 14, "image_id": 2, "category_id": 1, "bbox": [0.0, 0.0, 36.0, 48.0], "area": 1728.0, "iscrowd": 0},
    {"id": 15, "image_id": 2, "category_id": 1, "bbox": [10.0, 12.0, 8.0, 9.0], "area": 72.0, "iscrowd": 0},
]


def instances(images=IMAGES, annotations=ANNOTATIONS, categories=CATEGORIES) -> dict:
    return {"images": [{"id": i + 1, "file_name": f, "height": h, "width": w} for i, (f, h, w) in enumerate(images)],
            "annotations": [dict(a) for a in annotations], "categories": [dict(c) for c in categories]}


def write_det(root: Path, data: dict | None = None, *, splits=("train", "val"), skip_files=()) -> str:
    """Write images (random pixels; PNG or JPEG by extension) and the instances JSON ``data``
    (default :func:`instances`) for each split; files named in ``skip_files`` are not written."""
    data = instances() if data is None else data
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split in splits:
        folder = root / f"{split}2017"
        folder.mkdir(exist_ok=True)
        for img in data.get("images", []) if isinstance(data, dict) else []:
            if img.get("file_name") in skip_files or "height" not in img:
                continue
            pixels = rng.integers(0, 256, (img["height"], img["width"], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / img["file_name"])
        path = root / "annotations" / f"instances_{split}2017.json"
        path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(root)
