"""Object detection: box AP by pycocotools (iouType='bbox', :mod:`adaseg.eval.box_ap`).

* record: the image's COCO ``images`` entry, its ground-truth boxes and its COCO results from
  the model's detection postprocess at the original size. Ground truth: on detection data
  (``coco-det:ROOT``) the instances JSON's own annotations, unchanged (crowd included), so the
  figures are COCOeval(bbox) on the user's file (over the images evaluated); on panoptic data
  the thing segments as boxes (crowd kept as iscrowd=1, area = the segment's pixel area as
  COCO's instances files have it);
* report: ``AP_box``, ``AP50_box``, ``AP75_box``, ``APs_box``, ``APm_box``, ``APl_box`` of
  one COCOeval run over all images, each recomputable from the part;
* part ``box``: that run's per-image matching over the area ranges all / small / medium /
  large (:class:`~adaseg.eval.ap_matches.ApMatches`, stored as ``box_<field>`` tensors), from
  which any resample's AP and AP_S/M/L are accumulated (compare, sweep intervals); a parts file
  written before the ranges were kept gives None for AP_S/M/L;
* Step B: ``box_ap50``, see :meth:`DetectionEvaluator.image_quality`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from adaseg.eval.ap_matches import ApMatches
from adaseg.eval.box_ap import boxes_to_results, box_ap, image_ap_parts
from adaseg.eval.tasks.base import Evaluator, Summary, mean_by_cell

BOX_KEYS = ("AP_box", "AP50_box", "AP75_box")
SIZE_KEYS = ("APs_box", "APm_box", "APl_box")
_FIELDS = ("category_ids", "gt_count", "det_image", "det_category", "det_score", "det_tp", "det_fp")
_SIZE_FIELDS = ("size_gt_count", "size_det_tp", "size_det_fp")  # optional: older parts lack them


class DetectionEvaluator(Evaluator):
    task = "detection"
    record = "box"
    part = "box"
    postprocess = "detection"
    at_original_size = True
    figures = (*BOX_KEYS, *SIZE_KEYS)
    primary = "AP_box"
    sweep_keys = ("AP_box",)
    metric = "box_ap50"
    part_names = ("ap",)
    utilities = ("ap50",)
    quality_label = "box AP50 of the image"

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
        fields = (*_FIELDS, *_SIZE_FIELDS) if part.has_sizes else _FIELDS
        return {f"box_{f}": getattr(part, f) for f in fields}

    def part_from_tensors(self, tensors):
        if "box_det_score" not in tensors:
            return None
        return ApMatches(**{f: tensors[f"box_{f}"] for f in _FIELDS},
                         **{f: tensors[f"box_{f}"] for f in _SIZE_FIELDS if f"box_{f}" in tensors})

    def figures_of(self, part, parts, idx, weight, want) -> dict:
        if not want & set(self.figures):
            return {}
        ones = np.ones(parts.num_images, dtype=np.int64)
        ap = part.accumulate(ones if weight is None else weight, parts.id_rank, sizes=bool(want & set(SIZE_KEYS)))
        return {f"{k}_box": v for k, v in ap.items()}

    # ------------------------------------------------------------------ Step B
    def image_quality(self, scorer, batch, j, index, prediction) -> tuple[float, list]:
        """The image's box AP at IoU 0.5 over its own boxes: per class with a (non-crowd) box,
        COCOeval's AP50 of the image's detections of that class against them
        (:func:`~adaseg.eval.box_ap.image_ap_parts`), averaged over those classes; NaN on an
        image without boxes (undefined, as PQ on an image with nothing to segment: derive and
        fit-gate leave such cells out).

        Why AP50 of the image and not F1 at a score threshold: F1 counts only detections that
        score >= 0.5, so on a DETR whose scores have not passed the threshold (any early
        training; the CPU runs in the README) it is 0 on every image at every exit and the gate
        learns nothing; AP needs no threshold, ranks the image's own detections by score and is
        the dataset figure's own arithmetic (COCOeval's matching and 101-point precision), so an
        exit that ranks better boxes higher scores higher on the image and in AP_box. IoU 0.5
        rather than 0.5:0.95 keeps the image's value from being mostly 0 on small boxes.
        The README shows dataset AP and the mean of both per-image qualities per exit."""
        image_entry, anns = detection_gt(scorer, index)
        parts = image_ap_parts(anns, detection_results(scorer, index, prediction))
        if not parts:
            return math.nan, []
        rows = [(scorer.meta.to_contiguous(c), (float(ap),)) for c, ap in sorted(parts.items())]
        return sum(parts.values()) / len(parts), rows

    def quality_from_parts(self, index, values, n, e, utility):
        if utility != "ap50":
            raise ValueError(f"utility {utility!r} is not ap50 for box AP50 parts")
        return mean_by_cell(index, torch.ones(len(index), dtype=torch.bool), values[:, 0].double(), n, e)


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
