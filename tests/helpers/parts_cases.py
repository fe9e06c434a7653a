"""Per-image parts of random panoptic GT / prediction pairs (tests/eval/panoptic_cases.py), built the
way evaluation builds them, and independent oracles for any resample of their images:
pq_compute on a panoptic GT / prediction pair written out with the resampled images,
ConfusionMatrix over their semantic maps, and pycocotools' COCOeval on a COCO dataset of them
(each copy of an image a new image id)."""

from __future__ import annotations

import json
import os

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from adaseg.eval.ap import instance_ap, instances_from_panoptic, masks_to_results
from adaseg.eval.flops import FlopCount
from adaseg.eval.image_parts import ImageParts, build_parts
from adaseg.eval.miou import ConfusionMatrix
from adaseg.eval.pq import pq_image
from adaseg.eval.tasks.registry import suite_named
from panoptic_cases import CATEGORIES, THING_IDS, make_cases, write_set

CONTIGUOUS = {c["id"]: k for k, c in enumerate(CATEGORIES)}
FINGERPRINT = "f" * 64


def semantic(ids: np.ndarray, segs: list[dict]) -> np.ndarray:
    """(H, W) contiguous class of each pixel's segment; 255 on void."""
    out = np.full(ids.shape, 255, dtype=np.int64)
    for s in segs:
        out[ids == s["id"]] = CONTIGUOUS[s["category_id"]]
    return out


class Cases:
    """``n`` random images (ids 0..n-1): GT, predictions, instance results with random scores,
    random exits and FLOP counts of the first ``n_flops``."""

    def __init__(self, tmp_path, *, seed: int, n: int, n_flops: int):
        self.tmp = tmp_path
        self.gts, self.preds, _ = make_cases(seed, n, h=40, w=48)
        rng = np.random.default_rng(seed + 100)
        self.dets = []
        for image_id, ids, segs in self.preds:
            things = [s for s in segs if s["category_id"] in THING_IDS]
            masks = np.stack([ids == s["id"] for s in things]) if things else np.zeros((0,) + ids.shape, bool)
            self.dets.append((masks, rng.uniform(size=len(things)), [s["category_id"] for s in things]))
        self.exits = rng.integers(1, 7, size=n)
        self.flops = [FlopCount(total=int(rng.integers(10**8, 10**9)), scopes={"encoder": int(rng.integers(10**7, 10**8))})
                      for _ in range(n_flops)]

    def parts(self) -> ImageParts:
        """Built like evaluation does: per-image PQStats / ConfusionMatrix, one COCOeval run."""
        per_image = []
        for (image_id, g_ids, g_segs), (_, p_ids, p_segs), exit_ in zip(self.gts, self.preds, self.exits):
            cm = ConfusionMatrix(num_classes=len(CATEGORIES))
            cm.update(semantic(p_ids, p_segs), semantic(g_ids, g_segs))
            per_image.append({"exit": int(exit_), "cm": cm, "pq": pq_image(g_ids, g_segs, p_ids, p_segs, CATEGORIES)})
        folder = self.tmp / "parts_gt"
        write_set(str(folder), str(self.tmp / "parts_gt.json"), self.gts)
        gt = instances_from_panoptic(str(self.tmp / "parts_gt.json"), str(folder))
        results = [r for (image_id, _, _), (m, s, c) in zip(self.gts, self.dets)
                   for r in masks_to_results(image_id, m, s, c)]
        matches = instance_ap(gt, results, keep_matches=True)["matches"]
        return parts_from_results(per_image, self.flops, image_ids=[g[0] for g in self.gts],
                                  parent_fingerprint=FINGERPRINT, metric="pq", categories=CATEGORIES,
                                  ap_matches=matches)

    # ------------------------------------------------------------------ oracles
    def write_resample(self, idx: np.ndarray, name: str):
        """GT and prediction panoptic sets of the images ``idx`` (copy j gets image id j)."""
        gts = [(j, self.gts[i][1], self.gts[i][2]) for j, i in enumerate(idx)]
        preds = [(j, self.preds[i][1], self.preds[i][2]) for j, i in enumerate(idx)]
        d = self.tmp / name
        write_set(str(d / "gt"), str(d / "gt.json"), gts)
        write_set(str(d / "pred"), str(d / "pred.json"), preds, images=False)
        return d

    def pq_oracle(self, idx: np.ndarray, name: str) -> dict:
        from adaseg.eval.pq import pq_compute

        d = self.write_resample(idx, name)
        return pq_compute(str(d / "gt.json"), str(d / "pred.json"), str(d / "gt"), str(d / "pred"))

    def miou_oracle(self, idx: np.ndarray) -> dict:
        cm = ConfusionMatrix(num_classes=len(CATEGORIES))
        for i in idx:
            cm.update(semantic(self.preds[i][1], self.preds[i][2]), semantic(self.gts[i][1], self.gts[i][2]))
        return cm.results()

    def ap_oracle(self, idx: np.ndarray, name: str) -> np.ndarray:
        """pycocotools alone on JSON files of the resampled images: stats[:3] (AP, AP50, AP75).
        Copies get new ids in the order of their original ids (stable), the order in which
        COCOeval pooled the original images."""
        order = np.argsort(idx, kind="stable")
        new_id = np.empty(len(idx), dtype=np.int64)
        new_id[order] = np.arange(len(idx))
        anns, res, images = [], [], []
        for j, i in enumerate(idx):
            _, ids, segs = self.gts[i]
            images.append({"id": int(new_id[j]), "height": ids.shape[0], "width": ids.shape[1]})
            for s in segs:
                if s["category_id"] not in THING_IDS:
                    continue
                rle = mask_utils.encode(np.asfortranarray((ids == s["id"]).astype(np.uint8)))
                rle["counts"] = rle["counts"].decode()
                anns.append({"id": len(anns) + 1, "image_id": int(new_id[j]), "category_id": s["category_id"],
                             "segmentation": rle, "area": float(s["area"]), "iscrowd": s["iscrowd"],
                             "bbox": list(mask_utils.toBbox(rle))})
            masks, scores, cats = self.dets[i]
            for m, sc, c in zip(masks, scores, cats):
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode()
                res.append({"image_id": int(new_id[j]), "category_id": int(c), "segmentation": rle,
                            "score": float(sc)})
        d = self.tmp / f"{name}_coco"
        os.makedirs(d, exist_ok=True)
        (d / "gt.json").write_text(json.dumps({"images": images, "annotations": anns,
                                               "categories": [c for c in CATEGORIES if c["isthing"]]}))
        (d / "res.json").write_text(json.dumps(res))
        coco = COCO(str(d / "gt.json"))
        ev = COCOeval(coco, coco.loadRes(str(d / "res.json")), iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        return ev.stats[:3]


def parts_from_results(per_image: list[dict], flop_counts: list, *, image_ids: list, parent_fingerprint: str,
                       metric: str, categories: list[dict], ap_matches=None) -> ImageParts:
    """`build_parts` for callers that score images themselves: each row of ``per_image``
    holds ``exit`` and the record of every evaluator that makes its part from records alone
    (under its ``record`` key: ``cm`` a :class:`~adaseg.eval.miou.ConfusionMatrix`, ``pq`` a
    :class:`~adaseg.eval.pq.PQStats` keyed by dataset category id); ``ap_matches``: the
    instance evaluator's part (one COCOeval run of the same images), when the suite has it."""
    given = {} if ap_matches is None else {"ap": ap_matches}
    parts = {e.part: given[e.part] if e.part in given else e.part_of([r[e.record] for r in per_image], categories)
             for e in suite_named(metric).evaluators}
    rows = [dict(r, image_id=i) for r, i in zip(per_image, image_ids)]
    return build_parts(rows, flop_counts, parent_fingerprint=parent_fingerprint, metric=metric,
                       categories=categories, parts=parts)
