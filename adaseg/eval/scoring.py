"""Per-image scoring of a model's predictions, shared by Step B (derive) and evaluation.

* Panoptic (Mask2Former on a panoptic dataset): the prediction is resized to the image's
  original resolution and compared with the dataset's panoptic ground truth by
  :func:`adaseg.eval.pq.pq_image` (panopticapi's rules, dataset category ids).
* Semantic (Segmenter, or any model on a semantic dataset): a per-image confusion matrix
  against the sample's semantic map at the evaluation resolution (255 ignored).
* Instances (Mask2Former on a panoptic dataset): thing segments of the ground truth as COCO
  instances, predictions as COCO results, scored by pycocotools (:mod:`adaseg.eval.ap`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from adaseg.eval.miou import ConfusionMatrix
from adaseg.eval.pq import PQStats, pq_image


def quality_metric(model_task: str, data_task: str) -> str:
    """``"pq"`` when both the model and the data are panoptic, else ``"miou"``."""
    return "pq" if model_task == "panoptic" and data_task == "panoptic" else "miou"


class Scorer:
    """Scores predictions of one dataset (see the module docstring).

    Args:
        dataset: a :class:`~adaseg.data.SegmentationDataset` (eval transform).
        metric: ``"pq"`` or ``"miou"``.
    """

    def __init__(self, dataset, *, metric: str):
        if metric not in ("pq", "miou"):
            raise ValueError(f"metric must be 'pq' or 'miou', got {metric!r}")
        self.dataset = dataset
        self.meta = dataset.meta
        self.metric = metric
        self.categories = self.meta.categories_json()
        self._gt_cache: dict[int, tuple] = {}

    # ------------------------------------------------------------------ panoptic
    def panoptic_gt(self, index: int):
        if index not in self._gt_cache:
            self._gt_cache = {index: self.dataset.panoptic_gt(index)}  # keep one: images are read once per pass
        return self._gt_cache[index]

    def pq_stats(self, index: int, prediction) -> PQStats:
        """PQ statistics of one image. ``prediction``: (id map (H0, W0) int, segments with
        contiguous ``category_id``) as Mask2Former's panoptic postprocess returns at the
        original size."""
        pred_map, segments = prediction
        gt_map, gt_segments = self.panoptic_gt(index)
        pred_segments = [{"id": s["id"], "category_id": self.meta.to_dataset_id(s["category_id"])} for s in segments]
        return pq_image(gt_map, gt_segments, pred_map.cpu().numpy(), pred_segments, self.categories,
                        gt_name=f"ground truth of image {index}", pred_name=f"prediction for image {index}")

    def pq_parts(self, stats: PQStats) -> list[tuple[int, tuple[float, float, float, float]]]:
        """Sparse per-class parts ``(contiguous class, (tp, fp, fn, iou_sum))`` of classes with
        tp + fp + fn > 0."""
        rows = []
        for cid, s in sorted(stats.per_class.items()):
            if s.tp + s.fp + s.fn > 0:
                rows.append((self.meta.to_contiguous(cid), (float(s.tp), float(s.fp), float(s.fn), float(s.iou))))
        return rows

    # ------------------------------------------------------------------ semantic
    def confusion(self, semantic_gt: torch.Tensor, prediction: torch.Tensor) -> ConfusionMatrix:
        """Confusion matrix of one image: (h, w) GT (255 ignored) vs (h, w) predicted ids."""
        cm = ConfusionMatrix(num_classes=self.meta.num_classes, ignore_label=self.meta.ignore_label)
        cm.update(prediction, semantic_gt)
        return cm

    @staticmethod
    def miou_parts(cm: ConfusionMatrix) -> list[tuple[int, tuple[float, float]]]:
        """Sparse ``(class, (intersection, union))`` of classes with union > 0."""
        c = cm.num_classes
        tp = np.diag(cm.matrix[:, :c]).astype(np.float64)
        union = cm.matrix.sum(1) + cm.matrix[:, :c].sum(0) - tp
        return [(k, (float(tp[k]), float(union[k]))) for k in range(c) if union[k] > 0]

    @staticmethod
    def miou_of(cm: ConfusionMatrix) -> float:
        """Per-image mIoU over classes with union > 0; NaN when there is none."""
        iou = cm.iou()
        valid = ~np.isnan(iou)
        return float(iou[valid].mean()) if valid.any() else math.nan

    # ------------------------------------------------------------------ instances
    def instance_gt(self, index: int) -> tuple[dict, list[dict]]:
        """COCO ``images`` entry and thing-instance annotations (crowd kept as iscrowd=1)."""
        from adaseg.eval.ap import encode_mask

        gt_map, segments = self.panoptic_gt(index)
        image_id = self.dataset.records[index].image_id
        h, w = gt_map.shape
        things = {c["id"] for c in self.categories if c["isthing"]}
        anns = []
        for s in segments:
            if int(s["category_id"]) not in things:
                continue
            m = gt_map == int(s["id"])
            if not m.any():
                continue
            ys, xs = np.nonzero(m)
            anns.append({"image_id": image_id, "category_id": int(s["category_id"]), "segmentation": encode_mask(m),
                         "area": float(m.sum()), "iscrowd": int(s.get("iscrowd", 0)),
                         "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                                  float(ys.max() - ys.min() + 1)]})
        return {"id": image_id, "height": int(h), "width": int(w)}, anns

    def instance_results(self, index: int, prediction: dict) -> list[dict]:
        """COCO results of one image from Mask2Former's instance postprocess (original size)."""
        from adaseg.eval.ap import masks_to_results

        image_id = self.dataset.records[index].image_id
        cats = [self.meta.to_dataset_id(int(c)) for c in prediction["labels"].tolist()]
        return masks_to_results(image_id, prediction["masks"], prediction["scores"], cats)

    def instance_ap(self, images: list[dict], annotations: list[dict], results: list[dict], *,
                    keep_matches: bool = False) -> dict:
        from adaseg.eval.ap import instance_ap

        anns = [dict(a, id=i + 1) for i, a in enumerate(annotations)]
        things = [c for c in self.categories if c["isthing"]]
        # made here from the dataset and the model: nothing to validate, and decoding every RLE costs time
        return instance_ap({"images": images, "annotations": anns, "categories": things}, results, check=False,
                           keep_matches=keep_matches)
