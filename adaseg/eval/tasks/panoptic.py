"""Panoptic segmentation: PQ / SQ / RQ (All, Things, Stuff) with panopticapi's rules
(:mod:`adaseg.eval.pq`).

* record: the image's :class:`~adaseg.eval.pq.PQStats` (dataset category ids), its prediction
  resized to the original resolution by the model's postprocess;
* report: ``PQ SQ RQ PQ_th SQ_th RQ_th PQ_st SQ_st RQ_st`` of the summed statistics, and the
  per-image mean ``mean_image_PQ`` over images whose PQ is defined;
* part ``pq`` (N, C, 4) float64 per image and contiguous class ``[tp, fp, fn, iou_sum]``;
* Step B: ``pq``, the image's PQ over its classes with tp + fp + fn > 0 (NaN when none: empty
  ground truth and empty prediction), with parts ``(tp, fp, fn, iou_sum)``; utilities pq, sq, rq.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from adaseg.eval.pq import PQStats, pq_image
from adaseg.eval.tasks.base import Evaluator, Summary, mean_by_cell, weighted_sum

PQ_KEYS = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")


class PanopticEvaluator(Evaluator):
    task = "panoptic"
    record = "pq"
    part = "pq"
    postprocess = "panoptic"
    at_original_size = True
    figures = PQ_KEYS
    image_figures = ("mean_image_PQ",)
    primary = "PQ"
    sweep_keys = ("PQ", "SQ", "RQ", "PQ_th", "PQ_st")
    metric = "pq"
    part_names = ("tp", "fp", "fn", "iou_sum")
    utilities = ("pq", "sq", "rq")

    # ------------------------------------------------------------------ evaluation
    @staticmethod
    def stats(scorer, index: int, prediction) -> PQStats:
        """PQ statistics of one image. ``prediction``: (id map (H0, W0) int, segments with
        contiguous ``category_id``) as Mask2Former's panoptic postprocess returns at the
        original size."""
        pred_map, segments = prediction
        gt_map, gt_segments = scorer.panoptic_gt(index)
        pred_segments = [{"id": s["id"], "category_id": scorer.meta.to_dataset_id(s["category_id"])} for s in segments]
        return pq_image(gt_map, gt_segments, pred_map.cpu().numpy(), pred_segments, scorer.categories,
                        gt_name=f"ground truth of image {index}", pred_name=f"prediction for image {index}")

    def score(self, scorer, batch, j, index, prediction) -> PQStats:
        return self.stats(scorer, index, prediction)

    def summarize(self, scorer, records: Sequence[PQStats]) -> Summary:
        total = PQStats()
        for r in records:
            total += r
        pq = total.summary(scorer.categories)
        figures = {}
        for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
            for key in ("pq", "sq", "rq"):
                figures[key.upper() + suffix] = _nan_to_none(pq[group][key])
        defined = [s.pq() for s in records if s.pq() is not None]
        image_figures = {"mean_image_PQ": sum(defined) / len(defined) if defined else None}
        return Summary(figures, image_figures, self.part_of(records, scorer.categories))

    # ------------------------------------------------------------------ per-image parts
    def part_of(self, records: Sequence[PQStats], categories: list[dict]) -> np.ndarray:
        position = {int(cat["id"]): k for k, cat in enumerate(categories)}
        pq = np.zeros((len(records), len(categories), 4), dtype=np.float64)
        for i, stats in enumerate(records):
            for cid, s in stats.per_class.items():
                pq[i, position[int(cid)]] = (s.tp, s.fp, s.fn, s.iou)
        return pq

    def check_part(self, part, n, c) -> None:
        if part.shape != (n, c, 4):
            raise ValueError(f"ImageParts: pq has shape {part.shape}, expected {(n, c, 4)}")

    def part_tensors(self, part) -> dict[str, np.ndarray]:
        return {"pq": part}

    def part_from_tensors(self, tensors):
        return tensors.get("pq")

    def figures_of(self, part, parts, idx, weight, want) -> dict:
        out: dict = {}
        if want & set(PQ_KEYS):
            out.update(pq_figures(weighted_sum(part, weight), parts.isthing))
        if "mean_image_PQ" in want:
            per_image = parts.cached("image_pq", lambda: per_image_pq(part))
            vals = per_image if idx is None else per_image[idx]
            vals = vals[~np.isnan(vals)]
            out["mean_image_PQ"] = float(np.cumsum(vals)[-1] / len(vals)) if len(vals) else None
        return out

    # ------------------------------------------------------------------ Step B
    def image_quality(self, scorer, batch, j, index, prediction) -> tuple[float, list]:
        stats = self.stats(scorer, index, prediction)
        q = stats.pq()
        return (math.nan if q is None else float(q)), pq_parts(scorer, stats)

    def quality_from_parts(self, index, values, n, e, utility) -> torch.Tensor:
        tp, fp, fn, iou = (values[:, k] for k in range(4))
        denom = tp + 0.5 * fp + 0.5 * fn
        if utility == "pq":
            valid, value = (tp + fp + fn) > 0, iou / denom.clamp_min(1e-12)
        elif utility == "sq":
            valid, value = tp > 0, iou / tp.clamp_min(1e-12)
        elif utility == "rq":
            valid, value = (tp + fp + fn) > 0, tp / denom.clamp_min(1e-12)
        else:
            raise ValueError(f"utility {utility!r} is not one of pq, sq, rq for PQ parts")
        return mean_by_cell(index, valid, value, n, e)


def pq_parts(scorer, stats: PQStats) -> list[tuple[int, tuple[float, float, float, float]]]:
    """Sparse per-class parts ``(contiguous class, (tp, fp, fn, iou_sum))`` of classes with
    tp + fp + fn > 0."""
    rows = []
    for cid, s in sorted(stats.per_class.items()):
        if s.tp + s.fp + s.fn > 0:
            rows.append((scorer.meta.to_contiguous(cid), (float(s.tp), float(s.fp), float(s.fn), float(s.iou))))
    return rows


def pq_figures(sums: np.ndarray, isthing: np.ndarray) -> dict[str, float | None]:
    """PQ / SQ / RQ (All, _th, _st) of (C, 4) ``[tp, fp, fn, iou_sum]`` sums."""
    # panopticapi's pq_average (PQStats.average): classes with tp + fp + fn > 0, summed in
    # category order (cumsum: one addition after another, as the report does)
    tp, fp, fn, iou = (sums[:, j] for j in range(4))
    valid = tp + fp + fn > 0
    denom = tp + 0.5 * fp + 0.5 * fn
    with np.errstate(invalid="ignore", divide="ignore"):
        pq_c = iou / denom
        sq_c = np.where(tp != 0, iou / tp, 0.0)
        rq_c = tp / denom
    out: dict[str, float | None] = {}
    for suffix, group in (("", np.ones_like(valid)), ("_th", isthing), ("_st", ~isthing)):
        sel = valid & group
        n = int(sel.sum())
        for key, per_class in (("PQ", pq_c), ("SQ", sq_c), ("RQ", rq_c)):
            out[key + suffix] = float(np.cumsum(per_class[sel])[-1] / n) if n else None
    return out


def per_image_pq(pq: np.ndarray) -> np.ndarray:
    """(N,) each image's PQ over its classes with tp + fp + fn > 0; NaN when it has none."""
    tp, fp, fn, iou = (pq[..., j] for j in range(4))
    valid = tp + fp + fn > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(valid, iou / (tp + 0.5 * fp + 0.5 * fn), 0.0)
    n = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, per_class.sum(axis=1) / np.maximum(n, 1), np.nan)


def _nan_to_none(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


PANOPTIC = PanopticEvaluator()
