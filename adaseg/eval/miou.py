"""Semantic segmentation: confusion-matrix accumulator, per-class IoU and mIoU.

Pixels whose GT is ``ignore_label`` (255) are skipped. A prediction outside
``0..num_classes-1`` on a counted pixel is an error, except ``ignore_label``, which counts
as a miss (a false negative for the GT class, a false positive for no class) — the
Cityscapes evaluator's treatment of predictions of ignored labels.

IoU_c = TP / (TP + FP + FN); a class with TP + FP + FN = 0 (absent from GT and never
predicted) has IoU NaN and is left out of the mean, as cityscapesscripts and mmseg do.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from adaseg.data.meta import IGNORE_LABEL
from adaseg.data.panoptic_io import DataError, read_label_png


class ConfusionMatrix:
    """Accumulates a (C, C+1) matrix: rows GT class, columns predicted class, last column
    = predicted ``ignore_label``."""

    def __init__(self, *, num_classes: int, ignore_label: int = IGNORE_LABEL) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.matrix = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    def update(self, pred, gt, *, name: str = "prediction") -> None:
        """pred, gt: (H, W) or (B, H, W) integer arrays/tensors of contiguous ids."""
        pred = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
        gt = gt.detach().cpu().numpy() if isinstance(gt, torch.Tensor) else np.asarray(gt)
        if pred.shape != gt.shape:
            raise DataError(f"{name}: shape {pred.shape} differs from the ground truth's {gt.shape}")
        gt = gt.astype(np.int64).ravel()
        pred = pred.astype(np.int64).ravel()
        keep = gt != self.ignore_label
        gt, pred = gt[keep], pred[keep]
        c = self.num_classes
        if gt.size and (gt.min() < 0 or gt.max() >= c):
            raise DataError(f"{name}: ground-truth label {int(gt[(gt < 0) | (gt >= c)][0])} outside 0..{c - 1} "
                            f"and not {self.ignore_label}")
        pred = np.where(pred == self.ignore_label, c, pred)
        bad = (pred < 0) | (pred > c)
        if bad.any():
            raise DataError(f"{name}: predicted label {int(pred[bad][0])} outside 0..{c - 1} and not "
                            f"{self.ignore_label}")
        self.matrix += np.bincount(gt * (c + 1) + pred, minlength=c * (c + 1)).reshape(c, c + 1)

    def __iadd__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        self.matrix += other.matrix
        return self

    def iou(self) -> np.ndarray:
        """(C,) per-class IoU, NaN where TP + FP + FN = 0."""
        c = self.num_classes
        tp = np.diag(self.matrix[:, :c]).astype(np.float64)
        fn = self.matrix.sum(axis=1) - tp
        fp = self.matrix[:, :c].sum(axis=0) - tp
        denom = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)

    def results(self, class_names: list[str] | None = None) -> dict:
        """{'mIoU', 'pixel_acc', 'per_class': {name: IoU or None}} (fractions, not percent)."""
        iou = self.iou()
        valid = ~np.isnan(iou)
        total = self.matrix.sum()
        names = class_names or [str(i) for i in range(self.num_classes)]
        return {
            "mIoU": float(iou[valid].mean()) if valid.any() else None,
            "pixel_acc": float(np.trace(self.matrix[:, :self.num_classes]) / total) if total else None,
            "per_class": {n: (None if math.isnan(v) else float(v)) for n, v in zip(names, iou.tolist())},
        }


def miou_folders(gt_dir: str, pred_dir: str, *, num_classes: int, class_names: list[str] | None = None,
                 ignore_label: int = IGNORE_LABEL) -> dict:
    """mIoU of every ``*.png`` in ``gt_dir`` against the same file name in ``pred_dir`` (which
    must hold exactly those PNGs: a missing or an extra prediction is a DataError)."""
    for d in (gt_dir, pred_dir):
        if not os.path.isdir(d):
            raise DataError(f"{d}: label folder not found")
    names = sorted(f for f in os.listdir(gt_dir) if f.endswith(".png"))
    if not names:
        raise DataError(f"{gt_dir}: no .png label files (empty dataset)")
    extra = sorted(set(f for f in os.listdir(pred_dir) if f.endswith(".png")) - set(names))
    if extra:
        # a prediction with no ground truth would otherwise be left out of the score unseen
        raise DataError(f"{os.path.join(pred_dir, extra[0])}: prediction for an image {gt_dir} does not have "
                        f"({len(extra)} such file{'s' if len(extra) > 1 else ''})")
    cm = ConfusionMatrix(num_classes=num_classes, ignore_label=ignore_label)
    for n in names:
        pred_path = os.path.join(pred_dir, n)
        if not os.path.isfile(pred_path):
            raise DataError(f"{pred_path}: prediction missing for {os.path.join(gt_dir, n)}")
        gt = read_label_png(os.path.join(gt_dir, n))
        pred = read_label_png(pred_path)
        cm.update(pred, gt, name=pred_path)
    out = cm.results(class_names)
    out["num_images"] = len(names)
    return out
