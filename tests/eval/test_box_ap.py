"""Box AP and the detection evaluator against pycocotools run on JSON files written here, and
Step B's per-image box F1 against hand-counted cases and the evaluator's per-image box AP50
by hand."""

from __future__ import annotations

import contextlib
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from adaseg.eval.box_ap import box_ap, boxes_to_results, image_f1_parts
from adaseg.eval.tasks.detection import DETECTION
from adaseg.models.detr.criterion import boxes_from_masks

_CATS = [{"id": 1, "name": "a", "isthing": 1}, {"id": 3, "name": "b", "isthing": 1}]


def _case(seed: int):
    """Random GT boxes (some crowd, some small) and jittered detections with random scores."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for img in range(6):
        images.append({"id": 10 + img, "height": 200, "width": 300})
        for _ in range(rng.integers(0, 5)):
            x, y = rng.uniform(0, 200), rng.uniform(0, 120)
            w, h = rng.uniform(4, 90), rng.uniform(4, 70)
            cat = int(rng.choice([1, 3]))
            anns.append({"id": len(anns) + 1, "image_id": 10 + img, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h * rng.uniform(0.5, 1.0), "iscrowd": int(rng.uniform() < 0.1)})
            for _ in range(rng.integers(0, 3)):
                j = rng.normal(0, 6, 4)
                dets.append({"image_id": 10 + img, "category_id": cat if rng.uniform() < 0.8 else 4 - cat,
                             "bbox": [x + j[0], y + j[1], max(w + j[2], 1.0), max(h + j[3], 1.0)],
                             "score": float(rng.uniform())})
        for _ in range(rng.integers(0, 3)):  # false positives
            dets.append({"image_id": 10 + img, "category_id": 1, "bbox": list(rng.uniform(1, 100, 4)),
                         "score": float(rng.uniform())})
    return {"images": images, "annotations": anns, "categories": _CATS}, dets


def _pycocotools(gt: dict, dets: list[dict], tmp_path) -> np.ndarray:
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        ev = COCOeval(coco, coco.loadRes(str(tmp_path / "dt.json")), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[:6]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_ap_equals_pycocotools_on_files(seed, tmp_path):
    gt, dets = _case(seed)
    got = box_ap(gt, dets, keep_matches=True)
    want = _pycocotools(gt, dets, tmp_path)
    for name, w in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), want):
        assert got[name] == (None if w < 0 else pytest.approx(float(w), abs=1e-12)), name
    # the per-image matching recomputes AP / AP50 / AP75 over all images
    ranks = np.arange(len(gt["images"]))
    again = got["matches"].accumulate(np.ones(len(gt["images"]), dtype=np.int64), ranks)
    for name in ("AP", "AP50", "AP75"):
        assert again[name] == pytest.approx(got[name], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 3])
def test_box_ap_by_size_on_a_resample_equals_pycocotools(seed, tmp_path):
    """AP, AP50, AP75 and AP_S/M/L of a bootstrap resample (repeats, an image left out) from
    the kept matching == pycocotools on files holding the resampled copies as new images."""
    gt, dets = _case(seed)
    for j, a in enumerate(gt["annotations"]):  # spread areas over the three COCO ranges
        a["area"] = float([20.0, 400.0, 700.0, 2000.0, 9000.0][j % 5])
    got = box_ap(gt, dets, keep_matches=True)["matches"]
    assert got.has_sizes
    ids = [img["id"] for img in gt["images"]]
    idx = np.random.default_rng(seed).integers(0, len(ids), size=len(ids) + 3)
    order = np.argsort(idx, kind="stable")  # copies take new ids in the order COCOeval pooled them
    new_id = np.empty(len(idx), dtype=np.int64)
    new_id[order] = np.arange(len(idx)) + 1
    images, anns, res = [], [], []
    for j, i in enumerate(idx):
        images.append(dict(gt["images"][i], id=int(new_id[j])))
        anns += [dict(a, id=len(anns) + 1 + k, image_id=int(new_id[j]))
                 for k, a in enumerate(a for a in gt["annotations"] if a["image_id"] == ids[i])]
        res += [dict(d, image_id=int(new_id[j])) for d in dets if d["image_id"] == ids[i]]
    want = _pycocotools({"images": images, "annotations": anns, "categories": _CATS}, res, tmp_path)
    weights = np.bincount(idx, minlength=len(ids))
    again = got.accumulate(weights, np.arange(len(ids)), sizes=True)
    for name, w in zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), want):
        assert again[name] == (None if w < 0 else pytest.approx(float(w), abs=1e-12)), name
    assert sum(w >= 0 for w in want[3:]) >= 2  # the case reaches the size ranges


def test_matching_kept_without_size_ranges_gives_no_size_figures():
    """A parts file written before the area ranges were kept: AP as before, AP_S/M/L None."""
    from adaseg.eval.ap_matches import ApMatches

    gt, dets = _case(0)
    full = box_ap(gt, dets, keep_matches=True)["matches"]
    old = ApMatches(**{f: getattr(full, f) for f in ("category_ids", "gt_count", "det_image", "det_category",
                                                      "det_score", "det_tp", "det_fp")})
    ones, ranks = np.ones(len(gt["images"]), dtype=np.int64), np.arange(len(gt["images"]))
    got, want = old.accumulate(ones, ranks, sizes=True), full.accumulate(ones, ranks, sizes=True)
    assert [got[k] for k in ("AP", "AP50", "AP75")] == [want[k] for k in ("AP", "AP50", "AP75")]
    assert got["APs"] is got["APm"] is got["APl"] is None
    with pytest.raises(ValueError, match="partly given"):
        ApMatches(**{f: getattr(full, f) for f in ("category_ids", "gt_count", "det_image", "det_category",
                                                    "det_score", "det_tp", "det_fp", "size_gt_count")})


def test_boxes_to_results_writes_xywh():
    (r,) = boxes_to_results(7, torch.tensor([[10.0, 20.0, 40.0, 25.0]]), torch.tensor([0.5]), [3])
    assert r == {"image_id": 7, "category_id": 3, "bbox": [10.0, 20.0, 30.0, 5.0], "score": 0.5}


def test_image_f1_parts_by_hand():
    gt = [{"category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
          {"category_id": 1, "bbox": [50, 50, 10, 10], "iscrowd": 0},
          {"category_id": 2, "bbox": [100, 0, 40, 40], "iscrowd": 1}]
    dets = [{"category_id": 1, "bbox": [0, 0, 10, 9], "score": 0.9},      # IoU 0.9 -> tp
            {"category_id": 1, "bbox": [1, 0, 10, 10], "score": 0.8},     # box 0 taken -> fp
            {"category_id": 1, "bbox": [50, 50, 10, 10], "score": 0.3},   # below 0.5: not counted
            {"category_id": 2, "bbox": [110, 10, 10, 10], "score": 0.7},  # inside the crowd box: ignored
            {"category_id": 2, "bbox": [300, 0, 10, 10], "score": 0.6},   # fp
            {"category_id": 5, "bbox": [0, 0, 5, 5], "score": 0.99}]      # a class without GT: fp
    assert image_f1_parts(gt, dets) == {1: (1, 1, 1), 2: (0, 1, 0), 5: (0, 1, 0)}
    assert image_f1_parts([], []) == {}


def _scorer(gt_map: np.ndarray, segments: list[dict]):
    meta = SimpleNamespace(to_dataset_id=lambda c: [1, 3, 7][c], to_contiguous=lambda d: {1: 0, 3: 1, 7: 2}[d])
    cats = [*_CATS, {"id": 7, "name": "stuff", "isthing": 0}]
    return SimpleNamespace(panoptic_gt=lambda i: (gt_map, segments), categories=cats, meta=meta,
                           dataset=SimpleNamespace(records=[SimpleNamespace(image_id=5)]))


def test_detection_evaluator_quality_and_figures():
    gt_map = np.zeros((20, 30), dtype=np.int64)
    gt_map[2:6, 3:9] = 1    # thing 'a': box x 3..8, y 2..5 -> [3, 2, 6, 4]
    gt_map[10:20, :] = 2    # stuff: no box
    scorer = _scorer(gt_map, [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 7}])
    pred = {"boxes": torch.tensor([[3.0, 2.0, 9.0, 6.0], [0.0, 0.0, 30.0, 20.0], [20.0, 0.0, 25.0, 5.0]]),
            "scores": torch.tensor([0.9, 0.95, 0.8]), "labels": torch.tensor([0, 2, 1])}
    image, anns, results = DETECTION.score(scorer, None, 0, 0, pred)
    assert anns == [{"image_id": 5, "category_id": 1, "area": 24.0, "iscrowd": 0, "bbox": [3.0, 2.0, 6.0, 4.0]}]
    assert [r["category_id"] for r in results] == [1, 3]  # the stuff-class box is not a detection
    q, parts = DETECTION.image_quality(scorer, None, 0, 0, pred)
    # class a: its one box found by its one detection -> AP50 1; class b has no box: left out
    assert q == pytest.approx(1.0) and parts == [(0, (pytest.approx(1.0),))]
    # a higher-scoring miss of class a ahead of the hit: precision 1/2 at recall 1 -> AP50 0.5
    pred2 = {"boxes": torch.cat([pred["boxes"], torch.tensor([[12.0, 12.0, 18.0, 16.0]])]),
             "scores": torch.tensor([0.9, 0.95, 0.8, 0.99]), "labels": torch.tensor([0, 2, 1, 0])}
    q2, parts2 = DETECTION.image_quality(scorer, None, 0, 0, pred2)
    assert q2 == pytest.approx(0.5)
    index = torch.tensor([[0, 0, 0], [0, 1, 0]])
    values = torch.tensor([parts[0][1], parts2[0][1]], dtype=torch.float64)
    got = DETECTION.quality_from_parts(index, values, 1, 2, "ap50")
    assert got[0].tolist() == pytest.approx([q, q2])
    with pytest.raises(ValueError, match="not ap50"):
        DETECTION.quality_from_parts(index, values, 1, 2, "f1")
    summary = DETECTION.summarize(scorer, [(image, anns, results)])
    assert summary.figures["AP_box"] == pytest.approx(1.0) and summary.figures["APl_box"] is None
    parts_view = SimpleNamespace(num_images=1, id_rank=np.arange(1))
    assert DETECTION.figures_of(summary.part, parts_view, None, None, {"AP_box"})["AP_box"] == pytest.approx(1.0)


def test_boxes_from_masks_by_hand():
    masks = torch.zeros(3, 8, 12, dtype=torch.bool)
    masks[0, 2:5, 1:4] = True   # thing: x 1..3, y 2..4 in a valid 8 x 10 image
    masks[1, :, :] = True       # stuff: left out
    masks[2, 7, 9] = True       # a one-pixel thing at the valid image's corner
    got = boxes_from_masks({"masks": masks, "labels": torch.tensor([0, 5, 1])}, (0, 1, 2), (8, 10))
    assert got["labels"].tolist() == [0, 1]
    want_xyxy = torch.tensor([[1 / 10, 2 / 8, 4 / 10, 5 / 8], [9 / 10, 7 / 8, 1.0, 1.0]])
    want = torch.cat([(want_xyxy[:, :2] + want_xyxy[:, 2:]) / 2, want_xyxy[:, 2:] - want_xyxy[:, :2]], 1)
    torch.testing.assert_close(got["boxes"], want)
