"""Random panoptic GT / prediction pairs (with edge cases) written in COCO panoptic format,
for checking adaseg's PQ against cityscapesscripts' copy of panopticapi."""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from adaseg.data.panoptic_io import id2rgb

CATEGORIES = [
    {"id": 1, "name": "t1", "isthing": 1}, {"id": 3, "name": "t3", "isthing": 1},
    {"id": 7, "name": "t7", "isthing": 1}, {"id": 20, "name": "s20", "isthing": 0},
    {"id": 21, "name": "s21", "isthing": 0}, {"id": 40, "name": "s40", "isthing": 0},
]
THING_IDS = [1, 3, 7]
STUFF_IDS = [20, 21, 40]
PRED_MODES = ("copy", "perturb", "perturb", "perturb", "empty", "random", "void_heavy", "absent_class")


def _new_id(rng, used: set) -> int:
    while True:
        i = int(rng.integers(1, 2**24))
        if i not in used:
            used.add(i)
            return i


def segments_from_map(ids: np.ndarray, cat_of: dict, crowd: set = frozenset()) -> list[dict]:
    out = []
    u, c = np.unique(ids, return_counts=True)
    for sid, area in zip(u.tolist(), c.tolist()):
        if sid == 0:
            continue
        ys, xs = np.nonzero(ids == sid)
        out.append({"id": sid, "category_id": cat_of[sid], "iscrowd": int(sid in crowd), "area": area,
                    "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]})
    return out


def random_gt(rng, h: int, w: int, *, all_void: bool = False):
    """-> (ids (h, w) int64, segments_info)."""
    ids = np.zeros((h, w), dtype=np.int64)
    used, cat_of, crowd = set(), {}, set()
    if all_void:
        return ids, []
    cut = int(rng.integers(h // 4, 3 * h // 4))
    for region, n in ((slice(0, cut), 0), (slice(cut, h), 1)):
        if rng.uniform() < 0.85:
            sid = _new_id(rng, used)
            cat_of[sid] = int(rng.choice(STUFF_IDS))
            ids[region] = sid
    for _ in range(int(rng.integers(0, 8))):
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        tiny = rng.uniform() < 0.2
        hh = 1 if tiny else int(rng.integers(2, h // 2 + 2))
        ww = int(rng.integers(1, 3)) if tiny else int(rng.integers(2, w // 2 + 2))
        sid = _new_id(rng, used)
        cat_of[sid] = int(rng.choice(THING_IDS))
        if rng.uniform() < 0.15:
            crowd.add(sid)
        ids[y0:y0 + hh, x0:x0 + ww] = sid
    if rng.uniform() < 0.6:  # void
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        ids[y0:y0 + int(rng.integers(1, h // 2)), x0:x0 + int(rng.integers(1, w // 2))] = 0
    return ids, segments_from_map(ids, cat_of, crowd)


def random_pred(rng, gt_ids: np.ndarray, gt_segments: list[dict], mode: str):
    h, w = gt_ids.shape
    gcat = {s["id"]: s["category_id"] for s in gt_segments}
    all_cats = THING_IDS + STUFF_IDS
    used = set()
    if mode == "empty":
        return np.zeros_like(gt_ids), []
    if mode == "random":
        ids = np.zeros_like(gt_ids)
        cat_of = {}
        for _ in range(int(rng.integers(1, 6))):
            sid = _new_id(rng, used)
            cat_of[sid] = int(rng.choice(all_cats))
            y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
            ids[y0:y0 + int(rng.integers(1, h)), x0:x0 + int(rng.integers(1, w))] = sid
        return ids, segments_from_map(ids, cat_of)
    # remap GT ids to fresh prediction ids, keep categories
    remap = {0: 0}
    cat_of = {}
    for s in gt_segments:
        nid = _new_id(rng, used)
        remap[s["id"]] = nid
        cat_of[nid] = s["category_id"]
    ids = np.vectorize(remap.get)(gt_ids) if gt_segments else np.zeros_like(gt_ids)
    ids = ids.astype(np.int64)
    if mode == "void_heavy":
        # fill GT void with a prediction segment that lies mostly on void
        sid = _new_id(rng, used)
        cat_of[sid] = int(rng.choice(all_cats))
        ids[gt_ids == 0] = sid
    elif mode == "absent_class":
        present = set(gcat.values())
        absent = [c for c in all_cats if c not in present] or all_cats
        sid = _new_id(rng, used)
        cat_of[sid] = int(rng.choice(absent))
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        ids[y0:y0 + int(rng.integers(1, h)), x0:x0 + int(rng.integers(1, w))] = sid
    elif mode == "perturb":
        ids = np.roll(ids, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
        present = [i for i in np.unique(ids).tolist() if i != 0]
        if len(present) >= 2 and rng.uniform() < 0.4:  # merge
            a, b = rng.choice(present, 2, replace=False)
            ids[ids == b] = a
        if present and rng.uniform() < 0.4:  # split
            a = int(rng.choice(present))
            sid = _new_id(rng, used)
            cat_of[sid] = cat_of[a]
            m = (ids == a) & (np.arange(w)[None, :] > int(rng.integers(0, w)))
            ids[m] = sid
        for a in present:  # relabel
            if rng.uniform() < 0.15:
                cat_of[a] = int(rng.choice(all_cats))
        if rng.uniform() < 0.5:  # tiny segment
            sid = _new_id(rng, used)
            cat_of[sid] = int(rng.choice(all_cats))
            ids[int(rng.integers(0, h)), int(rng.integers(0, w))] = sid
        if rng.uniform() < 0.3:  # noise pixels become void
            ids[rng.uniform(size=ids.shape) < 0.05] = 0
    return ids, segments_from_map(ids, cat_of)


def write_set(folder: str, json_path: str, items: list[tuple], *, images: bool = True) -> None:
    """items: [(image_id, ids, segments)] -> PNGs in ``folder`` + JSON at ``json_path``."""
    os.makedirs(folder, exist_ok=True)
    anns, imgs = [], []
    for image_id, ids, segs in items:
        name = f"{image_id}.png"
        Image.fromarray(id2rgb(ids)).save(os.path.join(folder, name))
        anns.append({"image_id": image_id, "file_name": name, "segments_info": segs})
        imgs.append({"id": image_id, "file_name": name, "height": ids.shape[0], "width": ids.shape[1]})
    data = {"annotations": anns, "categories": CATEGORIES}
    if images:
        data["images"] = imgs
    with open(json_path, "w") as f:
        json.dump(data, f)


def make_cases(seed: int, n: int, h: int = 24, w: int = 32):
    """-> gt items, pred items, modes: n random images with every prediction mode."""
    rng = np.random.default_rng(seed)
    gts, preds, modes = [], [], []
    for i in range(n):
        all_void = i % 17 == 5
        gt_ids, gt_segs = random_gt(rng, h, w, all_void=all_void)
        mode = PRED_MODES[i % len(PRED_MODES)]
        p_ids, p_segs = random_pred(rng, gt_ids, gt_segs, mode)
        gts.append((i, gt_ids, gt_segs))
        preds.append((i, p_ids, p_segs))
        modes.append(mode)
    return gts, preds, modes
