"""Panoptic quality with panopticapi's exact semantics, per image and per dataset.

Matching rules (Kirillov et al.; panopticapi ``pq_compute``):

* a GT segment and a predicted segment of the same category match when IoU > 0.5, where
  the union leaves out the predicted pixels that fall on GT void (id 0);
* GT crowd segments (``iscrowd=1``) are never matched and never counted as false negatives;
* an unmatched predicted segment is not a false positive when more than half of it lies on
  GT void plus the (last-listed) GT crowd region of its category;
* per class: PQ = sum IoU / (TP + FP/2 + FN/2), SQ = sum IoU / TP, RQ = TP / (TP + FP/2 + FN/2);
  All / Things / Stuff average over the classes with TP + FP + FN > 0.

**Undefined PQ.** When no class has TP + FP + FN > 0 (an image whose GT is all void or crowd
and whose prediction is empty or entirely ignored; or a Things / Stuff group with no
segment at all), the average is undefined: :meth:`PQStats.pq` returns ``None`` and the
summaries carry ``pq = sq = rq = None`` with ``n = 0``, where panopticapi would divide by
zero. The caller decides what such an image is worth (Step B records it as undefined).
Per-class entries of classes with no segment are 0.0, as in panopticapi.

Stricter than panopticapi on malformed input: GT PNG ids missing from the GT JSON (and the
reverse) are errors here, as prediction ids already are in panopticapi; so are a prediction
for an image the GT does not annotate (panopticapi leaves it out of the score), an image
annotated twice, and ids, areas or boxes of the wrong type
(:func:`adaseg.data.panoptic_io.check_panoptic_annotations`).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from dataclasses import dataclass

import numpy as np

from adaseg.data.panoptic_io import (OFFSET, VOID, DataError, check_panoptic_annotations, check_panoptic_json,
                                    load_json, read_panoptic_png)


@dataclass
class PQStatCat:
    """Per-class sums: IoU of matched pairs, true / false positives, false negatives."""

    iou: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __iadd__(self, other: "PQStatCat") -> "PQStatCat":
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self


class PQStats:
    """Per-class :class:`PQStatCat` keyed by dataset category id; sums with ``+=``."""

    def __init__(self, per_class: dict[int, PQStatCat] | None = None) -> None:
        self.per_class: dict[int, PQStatCat] = dict(per_class or {})

    def __getitem__(self, category_id: int) -> PQStatCat:
        if category_id not in self.per_class:
            self.per_class[category_id] = PQStatCat()
        return self.per_class[category_id]

    def __setitem__(self, category_id: int, stat: PQStatCat) -> None:
        self.per_class[category_id] = stat

    def __iadd__(self, other: "PQStats") -> "PQStats":
        for cid, stat in other.per_class.items():
            mine = self[cid]
            mine += stat
        return self

    def __add__(self, other: "PQStats") -> "PQStats":
        out = PQStats()
        out += self
        out += other
        return out

    def average(self, categories, isthing: bool | None) -> tuple[dict, dict]:
        """panopticapi's ``pq_average``: ({pq, sq, rq, n}, per-class {pq, sq, rq}) over
        ``categories`` (list or id->dict); pq/sq/rq are None when n == 0."""
        cats = categories_by_id(categories)
        pq = sq = rq = 0.0
        n = 0
        per_class = {}
        for cid, info in cats.items():
            if isthing is not None and (int(info.get("isthing", 0)) == 1) != isthing:
                continue
            s = self.per_class.get(cid, PQStatCat())
            if s.tp + s.fp + s.fn == 0:
                per_class[cid] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            pq_c = s.iou / (s.tp + 0.5 * s.fp + 0.5 * s.fn)
            sq_c = s.iou / s.tp if s.tp != 0 else 0
            rq_c = s.tp / (s.tp + 0.5 * s.fp + 0.5 * s.fn)
            per_class[cid] = {"pq": pq_c, "sq": sq_c, "rq": rq_c}
            pq += pq_c
            sq += sq_c
            rq += rq_c
        if n == 0:
            return {"pq": None, "sq": None, "rq": None, "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class

    def summary(self, categories) -> dict:
        """panopticapi's result structure: {'All', 'Things', 'Stuff': {pq, sq, rq, n},
        'per_class': {category_id: {pq, sq, rq}}}."""
        results = {}
        for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
            results[name], per_class = self.average(categories, isthing)
            if name == "All":
                results["per_class"] = per_class
        return results

    def pq(self) -> float | None:
        """PQ averaged over the classes with TP + FP + FN > 0; None when there is none."""
        vals = [s.iou / (s.tp + 0.5 * s.fp + 0.5 * s.fn) for s in self.per_class.values() if s.tp + s.fp + s.fn > 0]
        return sum(vals) / len(vals) if vals else None

    def to_dict(self) -> dict:
        """JSON-able form: {category_id (str): [iou, tp, fp, fn]}."""
        return {str(c): [s.iou, s.tp, s.fp, s.fn] for c, s in sorted(self.per_class.items())}

    @classmethod
    def from_dict(cls, data: dict) -> "PQStats":
        return cls({int(c): PQStatCat(float(v[0]), int(v[1]), int(v[2]), int(v[3])) for c, v in data.items()})


def categories_by_id(categories) -> dict[int, dict]:
    """Categories as a list of dicts (COCO JSON) or an id -> dict mapping -> id -> dict."""
    if isinstance(categories, dict):
        return {int(k): v for k, v in categories.items()}
    return {int(c["id"]): c for c in categories}


def pq_image(gt_id_map: np.ndarray, gt_segments: list[dict], pred_id_map: np.ndarray, pred_segments: list[dict],
             categories, *, gt_name: str = "ground truth", pred_name: str = "prediction") -> PQStats:
    """PQ statistics of one image.

    Args:
        gt_id_map, pred_id_map: (H, W) integer segment ids (0 = void), same shape.
        gt_segments, pred_segments: COCO-panoptic segments_info (``id``, ``category_id``;
            GT also ``iscrowd`` and ``area`` — panopticapi takes GT areas from the JSON;
            missing GT areas are counted from the map). Prediction areas are always counted.
        categories: list of category dicts (``id``, ``isthing``) or id -> dict.
        gt_name, pred_name: names used in error messages (file names).

    Raises DataError for shape mismatches, ids in a map but not in its segments (or the
    reverse), duplicate ids, unknown category ids.
    """
    cats = categories_by_id(categories)
    gt_id_map = np.asarray(gt_id_map)
    pred_id_map = np.asarray(pred_id_map)
    if gt_id_map.shape != pred_id_map.shape:
        raise DataError(f"{pred_name}: size {pred_id_map.shape[::-1]} differs from {gt_name} size "
                        f"{gt_id_map.shape[::-1]} (width, height)")
    gt_segms = _segments_by_id(gt_segments, cats, gt_name)
    pred_segms = _segments_by_id(pred_segments, cats, pred_name)

    combined = gt_id_map.astype(np.uint64) * np.uint64(OFFSET) + pred_id_map.astype(np.uint64)
    labels, counts = np.unique(combined, return_counts=True)
    gt_of, pred_of = labels // np.uint64(OFFSET), labels % np.uint64(OFFSET)

    pred_area: dict[int, int] = {}
    gt_area_png: dict[int, int] = {}
    for g, p, c in zip(gt_of.tolist(), pred_of.tolist(), counts.tolist()):
        pred_area[p] = pred_area.get(p, 0) + c
        gt_area_png[g] = gt_area_png.get(g, 0) + c
    _check_ids(set(gt_area_png), gt_segms, gt_name)
    _check_ids(set(pred_area), pred_segms, pred_name)

    stats = PQStats()
    gt_pred_map = {(g, p): c for g, p, c in zip(gt_of.tolist(), pred_of.tolist(), counts.tolist())}
    gt_matched, pred_matched = set(), set()
    for (g, p), inter in gt_pred_map.items():
        if g not in gt_segms or p not in pred_segms:
            continue
        gs, ps = gt_segms[g], pred_segms[p]
        if gs.get("iscrowd", 0) == 1 or gs["category_id"] != ps["category_id"]:
            continue
        gt_area = gs["area"] if "area" in gs else gt_area_png[g]
        union = pred_area[p] + gt_area - inter - gt_pred_map.get((VOID, p), 0)
        iou = inter / union
        if iou > 0.5:
            st = stats[gs["category_id"]]
            st.tp += 1
            st.iou += iou
            gt_matched.add(g)
            pred_matched.add(p)

    crowd_by_cat = {}
    for g, gs in gt_segms.items():
        if g in gt_matched:
            continue
        if gs.get("iscrowd", 0) == 1:
            crowd_by_cat[gs["category_id"]] = g  # as panopticapi: the last crowd segment listed wins
            continue
        stats[gs["category_id"]].fn += 1
    for p, ps in pred_segms.items():
        if p in pred_matched:
            continue
        ignored = gt_pred_map.get((VOID, p), 0)
        if ps["category_id"] in crowd_by_cat:
            ignored += gt_pred_map.get((crowd_by_cat[ps["category_id"]], p), 0)
        if ignored / pred_area[p] > 0.5:
            continue
        stats[ps["category_id"]].fp += 1
    return stats


def _segments_by_id(segments: list[dict], cats: dict, name: str) -> dict[int, dict]:
    out = {}
    for s in segments:
        sid = int(s["id"])
        if sid in out:
            raise DataError(f"{name}: duplicate segment id {sid}")
        if sid == VOID:
            raise DataError(f"{name}: segment id 0 is reserved for void")
        if int(s["category_id"]) not in cats:
            raise DataError(f"{name}: segment {sid} has unknown category_id {s['category_id']}")
        out[sid] = {**s, "category_id": int(s["category_id"])}
    return out


def _check_ids(png_ids: set, segms: dict, name: str) -> None:
    extra = sorted(png_ids - set(segms) - {VOID})
    if extra:
        raise DataError(f"{name}: segment ids {extra[:10]} are in the PNG but not in the JSON")
    missing = sorted(set(segms) - png_ids)
    if missing:
        raise DataError(f"{name}: segment ids {missing[:10]} are in the JSON but not in the PNG")


class PQAccumulator:
    """Sums per-image :class:`PQStats` over a dataset without writing files.

    ``add(...)`` takes :func:`pq_image`'s arguments (minus categories) and returns that
    image's stats; ``results()`` gives panopticapi's structure for the sum.
    """

    def __init__(self, categories) -> None:
        self.categories = categories_by_id(categories)
        self.total = PQStats()
        self.num_images = 0

    def add(self, gt_id_map, gt_segments, pred_id_map, pred_segments, **names) -> PQStats:
        stats = pq_image(gt_id_map, gt_segments, pred_id_map, pred_segments, self.categories, **names)
        self.total += stats
        self.num_images += 1
        return stats

    def results(self) -> dict:
        return self.total.summary(self.categories)


def _pairs(gt: dict, pred: dict, gt_json: str, pred_json: str) -> list[tuple[dict, dict]]:
    """(GT annotation, its prediction) in GT order. Both sides must cover the same images: a
    prediction for an image the GT does not have is an error, not silently left out (it would
    leave the score looking better than the predictions are)."""
    pred_by_image = {ann["image_id"]: ann for ann in pred["annotations"]}
    gt_ids = {ann["image_id"] for ann in gt["annotations"]}
    for ann in pred["annotations"]:
        if ann["image_id"] not in gt_ids:
            raise DataError(f"{pred_json}: annotation {ann['file_name']} is for image_id {ann['image_id']!r}, which "
                            f"{gt_json} does not annotate")
    pairs = []
    for ann in gt["annotations"]:
        p = pred_by_image.get(ann["image_id"])
        if p is None:
            raise DataError(f"{pred_json}: no prediction for image_id {ann['image_id']!r} of {gt_json}")
        pairs.append((ann, p))
    if not pairs:
        raise DataError(f"{gt_json}: no annotations (empty dataset)")
    return pairs


def _stats_for_pairs(args: tuple) -> list[PQStats]:
    pairs, gt_folder, pred_folder, categories = args
    out = []
    for gt_ann, pred_ann in pairs:
        gt_path = os.path.join(gt_folder, gt_ann["file_name"])
        pred_path = os.path.join(pred_folder, pred_ann["file_name"])
        out.append(pq_image(read_panoptic_png(gt_path), gt_ann["segments_info"], read_panoptic_png(pred_path),
                            pred_ann["segments_info"], categories, gt_name=gt_path, pred_name=pred_path))
    return out


def pq_compute_per_image(gt_json, pred_json, gt_folder: str, pred_folder: str, *, num_workers: int = 0
                         ) -> tuple[list, list[PQStats], dict]:
    """Per-image stats of a prediction folder: (image_ids in GT order, [PQStats], categories).

    ``gt_json`` / ``pred_json``: paths to COCO-panoptic JSONs (or the loaded dicts).
    ``num_workers`` > 1 splits the images over that many processes.
    """
    gt, gt_name = _load(gt_json, "ground-truth panoptic")
    pred, pred_name = _load(pred_json, "prediction panoptic")
    check_panoptic_json(gt, gt_name, need_images=False)
    if "annotations" not in pred or not isinstance(pred["annotations"], list):
        raise DataError(f"{pred_name}: missing top-level list 'annotations'")
    check_panoptic_annotations(pred["annotations"], pred_name, {c["id"] for c in gt["categories"]}, gt=False)
    for folder in (gt_folder, pred_folder):
        if not os.path.isdir(folder):
            raise DataError(f"{folder}: panoptic PNG folder not found")
    cats = categories_by_id(gt["categories"])
    pairs = _pairs(gt, pred, gt_name, pred_name)
    if num_workers > 1 and len(pairs) > 1:
        chunks = [c for c in np.array_split(np.arange(len(pairs)), num_workers) if len(c)]
        jobs = [([pairs[i] for i in c], gt_folder, pred_folder, cats) for c in chunks]
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ctx.Pool(len(jobs)) as pool:
            per_image = [s for part in pool.map(_stats_for_pairs, jobs) for s in part]
    else:
        per_image = _stats_for_pairs((pairs, gt_folder, pred_folder, cats))
    return [g["image_id"] for g, _ in pairs], per_image, cats


def pq_compute(gt_json, pred_json, gt_folder: str | None = None, pred_folder: str | None = None, *,
               num_workers: int = 0) -> dict:
    """Dataset PQ with panopticapi's semantics and result structure (see module docstring):
    {'All', 'Things', 'Stuff': {pq, sq, rq, n}, 'per_class': {category_id: {pq, sq, rq}}}.

    As in panopticapi, a folder left out is the JSON path without ``.json``.
    """
    if gt_folder is None or pred_folder is None:
        if not (isinstance(gt_json, str) and isinstance(pred_json, str)):
            raise ValueError("pq_compute: give gt_folder and pred_folder when passing loaded JSON dicts")
        gt_folder = gt_folder if gt_folder is not None else os.path.splitext(gt_json)[0]
        pred_folder = pred_folder if pred_folder is not None else os.path.splitext(pred_json)[0]
    _, per_image, cats = pq_compute_per_image(gt_json, pred_json, gt_folder, pred_folder, num_workers=num_workers)
    total = PQStats()
    for s in per_image:
        total += s
    return total.summary(cats)


def _load(obj, what: str) -> tuple[dict, str]:
    if isinstance(obj, dict):
        return obj, what + " JSON"
    return load_json(str(obj), what=what), str(obj)
