"""Write the synthetic set to disk in COCO panoptic format, atomically.

Output (same layout as any COCO-panoptic folder, see :mod:`adaseg.data.coco_panoptic`)::

    DIR/annotations/panoptic_{train,val}.json   images carry "difficulty" (analysis only)
    DIR/annotations/instances_{train,val}.json  the same images' thing segments as COCO boxes
                                                (``--data coco-det:DIR``; pycocotools loads it)
    DIR/panoptic_{train,val}/NNNNNN.png
    DIR/panoptic_semseg_{train,val}/NNNNNN.png   contiguous ids, 255 = void
    DIR/{train,val}/NNNNNN.png                   RGB images
    DIR/synthetic.json                           generator version and arguments

Everything is written under a temporary sibling directory that is renamed to DIR at the
end, so an interrupted generation never leaves a DIR that looks complete.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import tempfile

import numpy as np
from PIL import Image

from adaseg.data.coco_detection import instances_from_panoptic
from adaseg.data.meta import IGNORE_LABEL
from adaseg.data.panoptic_io import id2rgb
from adaseg.data.synthetic.scene import categories_json, make_scene

GENERATOR_VERSION = 1
# image indices of the val split start here so train and val never share a scene
_VAL_OFFSET = 10_000_000


def _write_one(args: tuple) -> tuple[dict, dict]:
    tmp, split, seed, index, size, lut_ids, lut_vals = args
    offset = _VAL_OFFSET if split == "val" else 0
    image, ids, segments, difficulty = make_scene(seed, offset + index, size)
    name = f"{index:06d}"
    Image.fromarray(image).save(os.path.join(tmp, split, name + ".png"), compress_level=1)
    Image.fromarray(id2rgb(ids)).save(os.path.join(tmp, f"panoptic_{split}", name + ".png"))
    sem = np.full(ids.shape, IGNORE_LABEL, dtype=np.uint8)
    for s in segments:  # crowd segments carry their class in the semantic map
        sem[ids == s["id"]] = lut_vals[lut_ids.index(s["category_id"])]
    Image.fromarray(sem).save(os.path.join(tmp, f"panoptic_semseg_{split}", name + ".png"))
    img = {"id": index, "file_name": name + ".png", "height": size, "width": size,
           "difficulty": round(difficulty, 6)}
    ann = {"image_id": index, "file_name": name + ".png", "segments_info": segments}
    return img, ann


def write_synthetic(out: str, *, n_train: int = 1000, n_val: int = 200, size: int = 128, seed: int = 0,
                    workers: int | None = None) -> str:
    """Generate the synthetic set into ``out`` (must not exist). Returns ``out``.

    Args:
        n_train, n_val: images per split (n_val >= 1; n_train may be 0).
        size: square image side in pixels (>= 32).
        seed: everything is a function of (seed, split, index).
        workers: generator processes (default: min(4, CPU count)); 1 = in-process.
    """
    if os.path.exists(out):
        raise FileExistsError(f"{out}: already exists; refusing to overwrite")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    if n_train < 0 or n_val < 1:
        raise ValueError(f"need n_train >= 0 and n_val >= 1, got {n_train}, {n_val}")
    workers = workers or min(4, os.cpu_count() or 1)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out) + ".tmp-", dir=parent)
    try:
        cats = categories_json()
        lut_ids = [c["id"] for c in sorted(cats, key=lambda c: c["id"])]
        lut_vals = list(range(len(lut_ids)))
        os.makedirs(os.path.join(tmp, "annotations"))
        splits = [("train", n_train), ("val", n_val)]
        for split, _ in splits:
            for sub in (split, f"panoptic_{split}", f"panoptic_semseg_{split}"):
                os.makedirs(os.path.join(tmp, sub))
        jobs = [(tmp, split, seed, i, size, lut_ids, lut_vals) for split, n in splits for i in range(n)]
        if workers == 1:
            results = [_write_one(j) for j in jobs]
        else:
            # fork: the children only run numpy/PIL code and need no re-import of torch
            ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            with ctx.Pool(workers) as pool:
                results = pool.map(_write_one, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
        pos = 0
        for split, n in splits:
            imgs = [r[0] for r in results[pos:pos + n]]
            anns = [r[1] for r in results[pos:pos + n]]
            pos += n
            data = {"info": {"description": "adaseg synthetic panoptic set", "version": GENERATOR_VERSION,
                             "seed": seed, "size": size, "split": split},
                    "images": imgs, "annotations": anns, "categories": cats}
            with open(os.path.join(tmp, "annotations", f"panoptic_{split}.json"), "w") as f:
                json.dump(data, f)
            # the detection view of the same ground truth, written here (not by the evaluator)
            # so that `--data coco-det:DIR` reads it like any COCO detection folder and the
            # user can run COCOeval on it directly
            with open(os.path.join(tmp, "annotations", f"instances_{split}.json"), "w") as f:
                json.dump(instances_from_panoptic(data), f)
        with open(os.path.join(tmp, "synthetic.json"), "w") as f:
            json.dump({"version": GENERATOR_VERSION, "n_train": n_train, "n_val": n_val, "size": size,
                       "seed": seed}, f)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
