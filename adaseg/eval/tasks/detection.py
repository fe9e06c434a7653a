"""Object detection: box AP by pycocotools (iouType='bbox', :mod:`adaseg.eval.box_ap`).

* record: the image's COCO ``images`` entry, its ground-truth boxes and its COCO results from
  the model's detection postprocess at the original size. Ground truth: on detection data
  (``coco-det:ROOT``) the instances JSON's own annotations, unchanged (crowd included), so the
  figures are COCOeval(bbox) on the user's file (over the images evaluated); on panoptic data
  the thing segments as boxes (crowd kept as iscrowd=1, area = the segment's pixel area as
  COCO's instances files have it);
* report: ``AP_box``, ``AP50_box``, ``AP75_box`` (recomputable from the part) and
  ``APs_box``, ``APm_box``, ``APl_box`` of one COCOeval run over all images;
* part ``box``: that run's per-image matching (:class:`~adaseg.eval.ap_matches.ApMatches`,
  stored as ``box_<field>`` tensors), from which any resample's AP is accumulated (compare,
  sweep intervals);
* Step B: ``box_f1``, see :meth:`DetectionEvaluator.image_quality`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from adaseg.eval.ap_matches import ApMatches
from adaseg.eval.box_ap import boxes_to_results, box_ap, image_f1_parts
from adaseg.eval.tasks.base import Evaluator, Summary, mean_by_cell

BOX_KEYS = ("AP_box", "AP50_box", "AP75_box")
SIZE_KEYS = ("APs_box", "APm_box", "APl_box")
_FIELDS = ("category_ids", "gt_count", "det_image", "det_category", "det_score", "det_tp", "det_fp")


class DetectionEvaluator(Evaluator):
    task = "detection"
    record = "box"
    part = "box"
    postprocess = "detection"
    at_original_size = True
    figures = BOX_KEYS
    primary = "AP_box"
    sweep_keys = ("AP_box",)
    metric = "box_f1"
    part_names = ("tp", "fp", "fn")
    utilities = ("f1",)
    quality_label = "box F1 (IoU 0.5, score >= 0.5)"

    # ------------------------------------------------------------------ evaluation
    def score(self, scorer, batch, j, index, prediction) -> tuple[dict, list[dict], list[dict]]:
        image_entry, anns = detection_gt(scorer, index)
        return image_entry, anns, detection_results(scorer, index, prediction)

    def summarize(self, scorer, records: Sequence[tuple]) -> Summary:
        images = [r[0] for r in records]
        anns = [dict(a, id=i + 1) for i, a in enumerate(a for r in records for a in r[1])]
        things = [c for c in scorer.categories if c["isthing"]]
        ap = box_ap({"images": images, "annotations": anns, "categories": things},
                    [d for r in records for d in r[2]], keep_matches=True)
        figures = {k: ap[k.removesuffix("_box")] for k in (*BOX_KEYS, *SIZE_KEYS)}
        return Summary(figures, {}, ap["matches"])

    # ------------------------------------------------------------------ per-image parts
    def check_part(self, part, n, c) -> None:
        if part.num_images != n:
            raise ValueError(f"ImageParts: box AP matching of {part.num_images} images, expected {n}")

    def part_tensors(self, part) -> dict[str, np.ndarray]:
        return {f"box_{f}": getattr(part, f) for f in _FIELDS}

    def part_from_tensors(self, tensors):
        if "box_det_score" not in tensors:
            return None
        return ApMatches(**{f: tensors[f"box_{f}"] for f in _FIELDS})

    def figures_of(self, part, parts, idx, weight, want) -> dict:
        if not want & set(BOX_KEYS):
            return {}
        ones = np.ones(parts.num_images, dtype=np.int64)
        ap = part.accumulate(ones if weight is None else weight, parts.id_rank)
        return {f"{k}_box": v for k, v in ap.items()}

    # ------------------------------------------------------------------ Step B
    def image_quality(self, scorer, batch, j, index, prediction) -> tuple[float, list]:
        """The image's box F1 at IoU 0.5: per class, detections scoring >= 0.5 matched one to one
        to its boxes (:func:`~adaseg.eval.box_ap.image_f1_parts`), F1 = 2 tp / (2 tp + fp + fn),
        averaged over the classes with tp + fp + fn > 0; NaN when there are none (no boxes and
        no confident detection).

        Why not per-image AP: AP ranks detections against each other across images; on one
        image with one or two boxes it jumps between a few values with the rank of a single
        low-scoring false positive, and it is undefined on every image without boxes. F1 at
        IoU 0.5 depends only on the image's own boxes and confident detections, is defined
        whenever either exists (a spurious detection on an empty image scores 0), and is
        panoptic RQ's formula (RQ = tp / (tp + fp/2 + fn/2)), the recognition half of the
        segmentation recipe's PQ."""
        image_entry, anns = detection_gt(scorer, index)
        parts = image_f1_parts(anns, detection_results(scorer, index, prediction))
        if not parts:
            return math.nan, []
        f1 = [2 * tp / (2 * tp + fp + fn) for tp, fp, fn in parts.values()]
        rows = [(scorer.meta.to_contiguous(c), tuple(float(v) for v in p)) for c, p in sorted(parts.items())]
        return sum(f1) / len(f1), rows

    def quality_from_parts(self, index, values, n, e, utility):
        if utility != "f1":
            raise ValueError(f"utility {utility!r} is not f1 for box F1 parts")
        tp, fp, fn = (values[:, k] for k in range(3))
        valid = (tp + fp + fn) > 0
        return mean_by_cell(index, valid, 2 * tp / (2 * tp + fp + fn).clamp_min(1e-12), n, e)


def detection_gt(scorer, index: int) -> tuple[dict, list[dict]]:
    """COCO ``images`` entry and box annotations of image ``index``: on detection data the
    instances JSON's entries as they are; on panoptic data each thing segment's tight box
    (xywh, pixel edges), its pixel area and iscrowd."""
    instances_gt = getattr(scorer.dataset, "instances_gt", None)
    if instances_gt is not None:
        return instances_gt(index)
    gt_map, segments = scorer.panoptic_gt(index)
    image_id = scorer.dataset.records[index].image_id
    h, w = gt_map.shape
    things = {c["id"] for c in scorer.categories if c["isthing"]}
    anns = []
    for s in segments:
        if int(s["category_id"]) not in things:
            continue
        ys, xs = np.nonzero(gt_map == int(s["id"]))
        if not len(ys):
            continue
        anns.append({"image_id": image_id, "category_id": int(s["category_id"]), "area": float(len(ys)),
                     "iscrowd": int(s.get("iscrowd", 0)),
                     "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                              float(ys.max() - ys.min() + 1)]})
    return {"id": image_id, "height": int(h), "width": int(w)}, anns


def detection_results(scorer, index: int, prediction: dict) -> list[dict]:
    """COCO results of one image from a detection postprocess at the original size; boxes of
    classes that are not things (the class head of a panoptic class set) are left out."""
    image_id = scorer.dataset.records[index].image_id
    things = {c["id"] for c in scorer.categories if c["isthing"]}
    cats = [scorer.meta.to_dataset_id(int(c)) for c in prediction["labels"].tolist()]
    keep = [i for i, c in enumerate(cats) if c in things]
    return boxes_to_results(image_id, prediction["boxes"][keep], prediction["scores"][keep], [cats[i] for i in keep])


DETECTION = DetectionEvaluator()
