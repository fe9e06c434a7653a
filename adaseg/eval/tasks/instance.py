"""Instance segmentation: mask AP by pycocotools (iouType='segm', :mod:`adaseg.eval.ap`).

* record: the image's COCO ``images`` entry, its ground-truth thing instances (the panoptic
  ground truth's thing segments, crowd kept as iscrowd=1) and its COCO results from the model's
  instance postprocess at the original size;
* report: ``AP``, ``AP50``, ``AP75`` of one COCOeval run over all images;
* part ``ap``: that run's per-image matching (:class:`~adaseg.eval.ap_matches.ApMatches`,
  stored as ``ap_<field>`` tensors), from which any resample's AP is accumulated;
* Step B: none (no per-image quality).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from adaseg.eval.ap_matches import ApMatches
from adaseg.eval.tasks.base import Evaluator, Summary

AP_KEYS = ("AP", "AP50", "AP75")
_AP_FIELDS = ("category_ids", "gt_count", "det_image", "det_category", "det_score", "det_tp", "det_fp")


class InstanceEvaluator(Evaluator):
    task = "instance"
    record = "instance"
    part = "ap"
    postprocess = "instance"
    at_original_size = True
    figures = AP_KEYS
    primary = "AP"
    sweep_keys = ("AP",)

    # ------------------------------------------------------------------ evaluation
    def score(self, scorer, batch, j, index, prediction) -> tuple[dict, list[dict], list[dict]]:
        image_entry, anns = instance_gt(scorer, index)
        return image_entry, anns, instance_results(scorer, index, prediction)

    def summarize(self, scorer, records: Sequence[tuple]) -> Summary:
        images = [r[0] for r in records]
        gt = [a for r in records for a in r[1]]
        dt = [d for r in records for d in r[2]]
        ap = instance_ap(scorer, images, gt, dt, keep_matches=True)
        return Summary({k: ap[k] for k in AP_KEYS}, {}, ap["matches"])

    # ------------------------------------------------------------------ per-image parts
    def check_part(self, part, n, c) -> None:
        if part.num_images != n:
            raise ValueError(f"ImageParts: AP matching of {part.num_images} images, expected {n}")

    def part_tensors(self, part) -> dict[str, np.ndarray]:
        return {f"ap_{f}": getattr(part, f) for f in _AP_FIELDS}

    def part_from_tensors(self, tensors):
        if "ap_det_score" not in tensors:
            return None
        return ApMatches(**{f: tensors[f"ap_{f}"] for f in _AP_FIELDS})

    def figures_of(self, part, parts, idx, weight, want) -> dict:
        if not want & set(AP_KEYS):
            return {}
        ones = np.ones(parts.num_images, dtype=np.int64)
        return part.accumulate(ones if weight is None else weight, parts.id_rank)


def instance_gt(scorer, index: int) -> tuple[dict, list[dict]]:
    """COCO ``images`` entry and thing-instance annotations (crowd kept as iscrowd=1)."""
    from adaseg.eval.ap import encode_mask

    gt_map, segments = scorer.panoptic_gt(index)
    image_id = scorer.dataset.records[index].image_id
    h, w = gt_map.shape
    things = {c["id"] for c in scorer.categories if c["isthing"]}
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


def instance_results(scorer, index: int, prediction: dict) -> list[dict]:
    """COCO results of one image from Mask2Former's instance postprocess (original size)."""
    from adaseg.eval.ap import masks_to_results

    image_id = scorer.dataset.records[index].image_id
    cats = [scorer.meta.to_dataset_id(int(c)) for c in prediction["labels"].tolist()]
    return masks_to_results(image_id, prediction["masks"], prediction["scores"], cats)


def instance_ap(scorer, images: list[dict], annotations: list[dict], results: list[dict], *,
                keep_matches: bool = False) -> dict:
    """pycocotools' mask AP of these images over the dataset's thing categories."""
    from adaseg.eval.ap import instance_ap as coco_instance_ap

    anns = [dict(a, id=i + 1) for i, a in enumerate(annotations)]
    things = [c for c in scorer.categories if c["isthing"]]
    # made here from the dataset and the model: nothing to validate, and decoding every RLE costs time
    return coco_instance_ap({"images": images, "annotations": anns, "categories": things}, results, check=False,
                            keep_matches=keep_matches)


INSTANCE = InstanceEvaluator()
