"""adaseg's mask AP (panoptic GT -> instances, masks -> RLE results, COCOeval) against
pycocotools run directly on files built independently in the test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from adaseg.data.panoptic_io import DataError
from adaseg.eval.ap import instance_ap, instances_from_panoptic, masks_to_results
from panoptic_cases import CATEGORIES, THING_IDS, make_cases, write_set

import pycocotools.mask as mask_utils  # noqa: E402 - the reference implementation (an install requirement: never skipped)
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def _reference_stats(tmp_path, gts, preds_per_image):
    """COCO instances JSON + results JSON written here, evaluated by pycocotools only."""
    anns = []
    for image_id, ids, segs in gts:
        for s in segs:
            if s["category_id"] not in THING_IDS:
                continue
            rle = mask_utils.encode(np.asfortranarray((ids == s["id"]).astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": s["category_id"],
                         "segmentation": rle, "area": float(s["area"]), "iscrowd": s["iscrowd"],
                         "bbox": list(mask_utils.toBbox(rle))})
    gt = {"images": [{"id": i, "height": ids.shape[0], "width": ids.shape[1]} for i, ids, _ in gts],
          "annotations": anns, "categories": [c for c in CATEGORIES if c["isthing"]]}
    gt_path, res_path = tmp_path / "inst.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res = []
    for image_id, masks, scores, cats in preds_per_image:
        for m, s, c in zip(masks, scores, cats):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            res.append({"image_id": image_id, "category_id": int(c), "segmentation": rle, "score": float(s)})
    res_path.write_text(json.dumps(res))
    coco = COCO(str(gt_path))
    ev = COCOeval(coco, coco.loadRes(str(res_path)), iouType="segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats[:6]


def _predictions(rng, preds):
    out = []
    for image_id, ids, segs in preds:
        things = [s for s in segs if s["category_id"] in THING_IDS]
        masks = np.stack([ids == s["id"] for s in things]) if things else np.zeros((0,) + ids.shape, bool)
        out.append((image_id, masks, rng.uniform(size=len(things)), [s["category_id"] for s in things]))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_ap_matches_pycocotools(tmp_path, seed):
    gts, preds, _ = make_cases(seed, 30, h=40, w=48)
    write_set(str(tmp_path / "pan"), str(tmp_path / "pan.json"), gts)
    rng = np.random.default_rng(seed)
    per_image = _predictions(rng, preds)
    ref = _reference_stats(tmp_path, gts, per_image)
    gt_inst = instances_from_panoptic(str(tmp_path / "pan.json"), str(tmp_path / "pan"))
    results = [r for image_id, m, s, c in per_image for r in masks_to_results(image_id, m, s, c)]
    ours = instance_ap(gt_inst, results)
    for name, r in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), ref):
        if r < 0:
            assert ours[name] is None
        else:
            assert math.isclose(ours[name], r, abs_tol=1e-12), name
    assert set(ours["per_class"]) <= set(THING_IDS)


def test_perfect_and_empty_predictions():
    ids = np.zeros((20, 20), dtype=np.int64)
    ids[2:8, 2:9], ids[10:18, 5:15] = 1, 2
    gt = {"images": [{"id": 0, "height": 20, "width": 20}], "categories": [c for c in CATEGORIES if c["isthing"]],
          "annotations": []}
    for k, (sid, cat) in enumerate(((1, 1), (2, 3))):
        rle = mask_utils.encode(np.asfortranarray((ids == sid).astype(np.uint8)))
        gt["annotations"].append({"id": k + 1, "image_id": 0, "category_id": cat, "segmentation": rle,
                                  "area": float((ids == sid).sum()), "iscrowd": 0,
                                  "bbox": list(mask_utils.toBbox(rle))})
    perfect = masks_to_results(0, np.stack([ids == 1, ids == 2]), [0.9, 0.8], [1, 3])
    assert instance_ap(gt, perfect)["AP"] == pytest.approx(1.0)
    empty = instance_ap(gt, [])
    assert empty["AP"] == 0.0 and empty["per_class"] == {1: 0.0, 3: 0.0}


def test_unknown_category_in_results():
    gt = {"images": [{"id": 0, "height": 4, "width": 4}], "annotations": [],
          "categories": [{"id": 1, "name": "t1", "isthing": 1}]}
    res = masks_to_results(0, np.ones((1, 4, 4), bool), [0.5], [42])
    with pytest.raises(DataError, match="category_id 42"):
        instance_ap(gt, res)


def test_ground_truth_without_info_under_pycocotools_2_0_10(monkeypatch):
    """pycocotools 2.0.10's COCO.loadRes reads ``self.dataset['info']`` unguarded (2.0.11 uses
    .get): a ground truth without "info" (as adaseg builds from panoptic data) must still score."""
    import copy

    from pycocotools import coco as coco_module

    original = coco_module.COCO.loadRes

    def load_res_2_0_10(self, res_file):
        copy.deepcopy(self.dataset["info"])  # the line of 2.0.10 that raised KeyError: 'info'
        return original(self, res_file)

    monkeypatch.setattr(coco_module.COCO, "loadRes", load_res_2_0_10)
    ids = np.zeros((20, 20), dtype=np.int64)
    ids[2:8, 2:9] = 1
    rle = mask_utils.encode(np.asfortranarray((ids == 1).astype(np.uint8)))
    gt = {"images": [{"id": 0, "height": 20, "width": 20}], "categories": [c for c in CATEGORIES if c["isthing"]],
          "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "segmentation": rle, "area": 42.0,
                           "iscrowd": 0, "bbox": list(mask_utils.toBbox(rle))}]}
    assert "info" not in gt
    assert instance_ap(gt, masks_to_results(0, (ids == 1)[None], [0.9], [1]))["AP"] == pytest.approx(1.0)
    assert "info" not in gt  # the caller's dict is left as it was
