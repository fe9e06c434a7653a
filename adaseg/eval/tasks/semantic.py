"""Semantic segmentation: mIoU and pixel accuracy (:mod:`adaseg.eval.miou`).

* record: the image's :class:`~adaseg.eval.miou.ConfusionMatrix` against the sample's semantic
  map at the evaluation resolution (255 ignored);
* report: ``mIoU``, ``pixel_acc``, ``per_class_iou`` of the summed matrix;
* part ``seg`` (N, C, 3) int64 per image and class ``[tp, fp, fn]`` pixels (``fn`` includes
  pixels predicted as ignore): all mIoU and pixel accuracy need of the image's matrix;
* Step B: ``miou``, the image's mIoU over classes with union > 0 (NaN when none), with parts
  ``(intersection, union)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from adaseg.eval.miou import ConfusionMatrix
from adaseg.eval.tasks.base import Evaluator, Summary, mean_by_cell, weighted_sum

SEG_KEYS = ("mIoU", "pixel_acc")


class SemanticEvaluator(Evaluator):
    task = "semantic"
    record = "cm"
    part = "seg"
    postprocess = "semantic"
    at_original_size = False
    figures = SEG_KEYS
    primary = "mIoU"
    sweep_keys = ("mIoU",)
    metric = "miou"
    part_names = ("intersection", "union")
    utilities = ("miou",)

    # ------------------------------------------------------------------ evaluation
    @staticmethod
    def confusion(scorer, semantic_gt: torch.Tensor, prediction: torch.Tensor) -> ConfusionMatrix:
        """Confusion matrix of one image: (h, w) GT (255 ignored) vs (h, w) predicted ids."""
        cm = ConfusionMatrix(num_classes=scorer.meta.num_classes, ignore_label=scorer.meta.ignore_label)
        cm.update(prediction, semantic_gt)
        return cm

    def score(self, scorer, batch, j, index, prediction) -> ConfusionMatrix:
        h, w = batch["sizes"][j]
        return self.confusion(scorer, batch["targets"][j]["semantic"][:h, :w], prediction.cpu())

    def summarize(self, scorer, records: Sequence[ConfusionMatrix]) -> Summary:
        cm = ConfusionMatrix(num_classes=scorer.meta.num_classes, ignore_label=scorer.meta.ignore_label)
        for r in records:
            cm += r
        sem = cm.results(scorer.meta.class_names)
        figures = {"mIoU": sem["mIoU"], "pixel_acc": sem["pixel_acc"], "per_class_iou": sem["per_class"]}
        return Summary(figures, {}, self.part_of(records, scorer.categories))

    # ------------------------------------------------------------------ per-image parts
    def part_of(self, records: Sequence[ConfusionMatrix], categories: list[dict]) -> np.ndarray:
        c = len(categories)
        seg = np.zeros((len(records), c, 3), dtype=np.int64)
        for i, cm in enumerate(records):
            m = cm.matrix
            tp = np.diag(m[:, :c])
            seg[i, :, 0] = tp
            seg[i, :, 1] = m[:, :c].sum(axis=0) - tp
            seg[i, :, 2] = m.sum(axis=1) - tp
        return seg

    def check_part(self, part, n, c) -> None:
        if part.shape != (n, c, 3):
            raise ValueError(f"ImageParts: seg has shape {part.shape}, expected {(n, c, 3)}")

    def part_tensors(self, part) -> dict[str, np.ndarray]:
        return {"seg": part}

    def part_from_tensors(self, tensors):
        return tensors.get("seg")

    def figures_of(self, part, parts, idx, weight, want) -> dict:
        if not want & set(SEG_KEYS):
            return {}
        if weight is None:
            sums = part.sum(axis=0)
        else:  # float64 (BLAS) holds these integer counts exactly: far below 2**53
            seg = parts.cached("seg", lambda: part.astype(np.float64))
            sums = np.rint(weighted_sum(seg, weight)).astype(np.int64)
        return seg_figures(sums)

    # ------------------------------------------------------------------ Step B
    def image_quality(self, scorer, batch, j, index, prediction) -> tuple[float, list]:
        cm = self.score(scorer, batch, j, index, prediction)
        return miou_of(cm), miou_parts(cm)

    def quality_from_parts(self, index, values, n, e, utility) -> torch.Tensor:
        if utility != "miou":
            raise ValueError(f"utility {utility!r} is not available for mIoU parts (use miou)")
        valid = values[:, 1] > 0
        return mean_by_cell(index, valid, values[:, 0] / values[:, 1].clamp_min(1e-12), n, e)


def miou_parts(cm: ConfusionMatrix) -> list[tuple[int, tuple[float, float]]]:
    """Sparse ``(class, (intersection, union))`` of classes with union > 0."""
    c = cm.num_classes
    tp = np.diag(cm.matrix[:, :c]).astype(np.float64)
    union = cm.matrix.sum(1) + cm.matrix[:, :c].sum(0) - tp
    return [(k, (float(tp[k]), float(union[k]))) for k in range(c) if union[k] > 0]


def miou_of(cm: ConfusionMatrix) -> float:
    """Per-image mIoU over classes with union > 0; NaN when there is none."""
    iou = cm.iou()
    valid = ~np.isnan(iou)
    return float(iou[valid].mean()) if valid.any() else math.nan


def seg_figures(sums: np.ndarray) -> dict[str, float | None]:
    """mIoU and pixel accuracy of (C, 3) ``[tp, fp, fn]`` sums."""
    # the arithmetic of ConfusionMatrix.iou / results, so the full set is bit-identical
    tp, fp, fn = (sums[:, j] for j in range(3))
    tp_f = tp.astype(np.float64)
    denom = tp_f + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp_f / np.maximum(denom, 1), np.nan)
    valid = ~np.isnan(iou)
    total = int((tp + fn).sum())
    return {"mIoU": float(iou[valid].mean()) if valid.any() else None,
            "pixel_acc": float(tp.sum() / total) if total else None}


SEMANTIC = SemanticEvaluator()
