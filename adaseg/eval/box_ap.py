"""Box detection metrics: COCO box AP by pycocotools (iouType='bbox') and the per-image
quality of Step B for detection (:func:`image_ap_parts`, the image's AP at IoU 0.5 over its
own boxes; :func:`image_f1_parts`, F1 at IoU 0.5 over detections scoring >= 0.5, is the
alternative it was chosen over, kept for that comparison).

Ground truth is a COCO *instances* dict (``images`` with height/width, ``annotations`` with
``bbox`` [x, y, w, h], ``area``, ``iscrowd``; ``categories``); results are COCO result dicts
``{image_id, category_id, bbox: [x, y, w, h], score}``. Metrics are fractions: AP, AP50, AP75,
APs, APm, APl (None where COCOeval gives -1: no ground truth in that range).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from pycocotools import mask as mask_utils

from adaseg.eval.ap import _STAT_NAMES, run_cocoeval

STAT_NAMES = _STAT_NAMES


def boxes_to_results(image_id, boxes, scores, category_ids) -> list[dict]:
    """(n, 4) xyxy pixel boxes, (n,) scores, (n,) dataset category ids -> COCO result dicts."""
    boxes = torch.as_tensor(boxes).detach().cpu().double()
    scores = torch.as_tensor(scores).detach().cpu().double()
    category_ids = torch.as_tensor(category_ids).detach().cpu()
    if not (len(boxes) == len(scores) == len(category_ids)):
        raise ValueError(f"boxes_to_results: {len(boxes)} boxes, {len(scores)} scores, {len(category_ids)} categories")
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
    return [{"image_id": image_id, "category_id": int(c), "bbox": [float(v) for v in b], "score": float(s)}
            for b, s, c in zip(xywh.tolist(), scores.tolist(), category_ids.tolist())]


def box_ap(gt: dict, results: list[dict], *, keep_matches: bool = False) -> dict:
    """COCOeval(bbox) of ``results`` against the instances dict ``gt`` (made by adaseg).

    Returns the :data:`STAT_NAMES` figures and ``per_class`` {category_id: AP}; with
    ``keep_matches`` also ``matches``: the run's per-image matching
    (:class:`~adaseg.eval.ap_matches.ApMatches`, images in ``gt['images']`` order).
    """
    return run_cocoeval(gt, results, iou_type="bbox", keep_matches=keep_matches)


def image_f1_parts(gt: list[dict], results: list[dict], *, iou: float = 0.5,
                   score_threshold: float = 0.5) -> dict[int, tuple[int, int, int]]:
    """One image's per-class ``(tp, fp, fn)`` at IoU ``iou``: the detections scoring at least
    ``score_threshold``, by descending score, each matched to the unmatched non-crowd box of its
    class with the highest IoU >= ``iou`` (a tp); one that matches none but covers a crowd box
    (pycocotools' crowd IoU: intersection / detection area >= ``iou``) is ignored, others are
    fps; unmatched non-crowd boxes are fns. Classes with tp + fp + fn = 0 are left out.

    Args:
        gt: the image's annotations (``bbox`` xywh, ``category_id``, ``iscrowd``).
        results: the image's COCO results (``bbox`` xywh, ``category_id``, ``score``).
    """
    by_class_gt, by_class_dt = defaultdict(list), defaultdict(list)
    for a in gt:
        by_class_gt[int(a["category_id"])].append(a)
    for r in results:
        if float(r["score"]) >= score_threshold:
            by_class_dt[int(r["category_id"])].append(r)
    parts = {}
    for c in sorted(set(by_class_gt) | set(by_class_dt)):
        anns = by_class_gt[c]
        dets = sorted(by_class_dt[c], key=lambda r: -float(r["score"]))
        crowd = [int(a.get("iscrowd", 0)) for a in anns]
        n_real = len(anns) - sum(crowd)
        outcome = _match(dets, anns, crowd, iou)
        tp, fp = outcome.count(True), outcome.count(False)
        fn = n_real - tp
        if tp + fp + fn:
            parts[c] = (tp, fp, fn)
    return parts


def _match(dets: list[dict], anns: list[dict], crowd: list[int], iou: float) -> list[bool | None]:
    """Greedy matching of one class in one image, as COCOeval: ``dets`` in score order, each
    taking the unmatched non-crowd box of highest IoU >= ``iou`` (True: a true positive); one
    that takes none but covers a crowd box (pycocotools' crowd IoU: intersection / detection
    area >= ``iou``) is ignored (None); the others are false positives (False)."""
    if not dets or not anns:
        return [False] * len(dets)
    ious = np.asarray(mask_utils.iou([d["bbox"] for d in dets], [a["bbox"] for a in anns], crowd))
    used = np.zeros(len(anns), dtype=bool)
    outcome: list[bool | None] = []
    for i in range(len(dets)):
        free = [(ious[i, j], j) for j in range(len(anns)) if not crowd[j] and not used[j] and ious[i, j] >= iou]
        if free:
            used[max(free)[1]] = True
            outcome.append(True)
        else:
            outcome.append(None if any(crowd[j] and ious[i, j] >= iou for j in range(len(anns))) else False)
    return outcome


def _ap_101(tp: np.ndarray, fp: np.ndarray, npos: int) -> float:
    """COCO's 101-point interpolated AP of detections in score order (``tp``/``fp`` (n,) 0/1,
    ignored detections already removed) against ``npos`` > 0 boxes."""
    if len(tp) == 0:
        return 0.0
    tps, fps = np.cumsum(tp, dtype=np.float64), np.cumsum(fp, dtype=np.float64)
    recall = tps / npos
    precision = tps / np.maximum(tps + fps, np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the envelope: best precision at >= recall
    thresholds = np.linspace(0.0, 1.0, 101)
    at = np.searchsorted(recall, thresholds, side="left")
    return float(np.where(at < len(precision), precision[np.minimum(at, len(precision) - 1)], 0.0).mean())


def image_ap_parts(gt: list[dict], results: list[dict], *, iou: float = 0.5, max_dets: int = 100
                   ) -> dict[int, float]:
    """One image's per-class AP at IoU ``iou`` over its own boxes: COCOeval's arithmetic (all
    areas, the ``max_dets`` best detections of each class) applied to this image alone, for each
    class with at least one non-crowd box. Detections, by descending score (stable), each match
    the unmatched non-crowd box of their class with the highest IoU >= ``iou``; one that matches
    none but overlaps a crowd box (intersection / detection area >= ``iou``) is ignored; the
    others are false positives; AP is the mean of the interpolated precision at the 101 recall
    thresholds 0, 0.01, ..., 1 (pycocotools' ``precision[t, :, k, 0, -1]``).

    Classes without a non-crowd box (only detections, or only crowd) are left out, as COCOeval
    leaves out a category without ground truth; an image without any box gives ``{}``.

    Args:
        gt: the image's annotations (``bbox`` xywh, ``category_id``, ``iscrowd``).
        results: the image's COCO results (``bbox`` xywh, ``category_id``, ``score``).

    Returns:
        {category_id: AP in [0, 1]}.
    """
    by_class_gt, by_class_dt = defaultdict(list), defaultdict(list)
    for a in gt:
        by_class_gt[int(a["category_id"])].append(a)
    for r in results:
        by_class_dt[int(r["category_id"])].append(r)
    out = {}
    for c in sorted(by_class_gt):
        anns = by_class_gt[c]
        crowd = [int(a.get("iscrowd", 0)) for a in anns]
        npos = len(anns) - sum(crowd)
        if npos == 0:
            continue
        # by descending score, stable (COCOeval's mergesort), its max_dets best per image and class
        dets = sorted(by_class_dt[c], key=lambda r: -float(r["score"]))[:max_dets]
        kept = np.asarray([o for o in _match(dets, anns, crowd, iou) if o is not None], dtype=np.float64)
        out[c] = _ap_101(kept, 1.0 - kept, npos)
    return out
