"""Step B's per-image box AP (eval/box_ap.py image_ap_parts) against a hand computation and
against pycocotools' COCOeval run on each image alone."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from adaseg.eval.box_ap import image_ap_parts


def _box(x, y, w, h, cat=1, crowd=0):
    return {"bbox": [x, y, w, h], "category_id": cat, "iscrowd": crowd, "area": w * h}


def _det(x, y, w, h, score, cat=1):
    return {"bbox": [x, y, w, h], "category_id": cat, "score": score}


def test_image_ap_by_hand():
    gt = [_box(0, 0, 10, 10), _box(50, 50, 10, 10)]
    # by score: a hit, a miss, a hit -> precision 1 at recall 0.5, 2/3 at recall 1
    dets = [_det(0, 0, 10, 10, 0.9), _det(20, 20, 10, 10, 0.8), _det(50, 50, 10, 10, 0.7)]
    # the 51 recall thresholds 0..0.5 read precision 1, the 50 above read 2/3
    assert image_ap_parts(gt, dets)[1] == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101, abs=1e-12)
    # the miss first: precision 1/2 at recall 0.5, 2/3 at 1 -> the envelope is 2/3 everywhere
    dets = [_det(20, 20, 10, 10, 0.95), *dets[:1], *dets[2:]]
    assert image_ap_parts(gt, dets)[1] == pytest.approx(2 / 3, abs=1e-12)
    # IoU 0.5 is the bar: a box shifted by a third of its width has IoU 20/40 = 0.5 (a hit)
    assert image_ap_parts([_box(0, 0, 30, 10)], [_det(10, 0, 30, 10, 0.5)])[1] == pytest.approx(1.0)
    assert image_ap_parts([_box(0, 0, 30, 10)], [_det(11, 0, 30, 10, 0.5)])[1] == 0.0
    # a class with only detections is left out; a class with only crowd is left out
    parts = image_ap_parts([_box(0, 0, 10, 10), _box(0, 0, 40, 40, cat=2, crowd=1)],
                           [_det(0, 0, 10, 10, 0.3), _det(5, 5, 10, 10, 0.9, cat=3), _det(1, 1, 5, 5, 0.9, cat=2)])
    assert parts == {1: pytest.approx(1.0)}
    # a detection inside a crowd box is ignored, not a false positive
    gt = [_box(0, 0, 10, 10), _box(40, 40, 40, 40, crowd=1)]
    assert image_ap_parts(gt, [_det(50, 50, 10, 10, 0.9), _det(0, 0, 10, 10, 0.5)])[1] == pytest.approx(1.0)
    assert image_ap_parts([], [_det(0, 0, 10, 10, 0.5)]) == {}
    assert image_ap_parts(gt, []) == {1: 0.0}


def _random_image(rng):
    anns, dets = [], []
    for _ in range(rng.integers(0, 6)):
        x, y, w, h = rng.uniform(0, 150), rng.uniform(0, 100), rng.uniform(4, 60), rng.uniform(4, 50)
        cat = int(rng.choice([1, 3]))
        anns.append(_box(x, y, w, h, cat, int(rng.uniform() < 0.15)))
        for _ in range(rng.integers(0, 3)):
            j = rng.normal(0, 5, 4)
            dets.append(_det(x + j[0], y + j[1], max(w + j[2], 1.0), max(h + j[3], 1.0), float(rng.uniform()),
                             cat if rng.uniform() < 0.8 else 4 - cat))
    for _ in range(rng.integers(0, 4)):
        dets.append(_det(*rng.uniform(1, 80, 4), float(rng.uniform()), int(rng.choice([1, 3]))))
    return anns, dets


@pytest.mark.parametrize("seed", range(8))
def test_image_ap_equals_cocoeval_on_one_image(seed, tmp_path):
    rng = np.random.default_rng(seed)
    anns, dets = _random_image(rng)
    gt = {"images": [{"id": 7, "height": 200, "width": 300}],
          "annotations": [dict(a, id=i + 1, image_id=7) for i, a in enumerate(anns)],
          "categories": [{"id": 1, "name": "a"}, {"id": 3, "name": "b"}]}
    expected = {}
    if dets:
        (tmp_path / "gt.json").write_text(json.dumps(gt))
        (tmp_path / "dt.json").write_text(json.dumps([dict(d, image_id=7) for d in dets]))
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(tmp_path / "gt.json"))
            ev = COCOeval(coco, coco.loadRes(str(tmp_path / "dt.json")), iouType="bbox")
            ev.evaluate()
            ev.accumulate()
        for k, cat in enumerate(ev.params.catIds):
            p = ev.eval["precision"][0, :, k, 0, -1]  # IoU 0.5, all recalls, area all, 100 dets
            if (p > -1).all():
                expected[cat] = float(p.mean())
            elif any(a["category_id"] == cat and not a["iscrowd"] for a in anns):  # no detection: AP 0
                expected[cat] = 0.0
    else:
        expected = {c: 0.0 for c in {a["category_id"] for a in anns if not a["iscrowd"]}}
    got = image_ap_parts(anns, dets)
    assert got.keys() == expected.keys()
    for c in got:
        assert got[c] == pytest.approx(expected[c], abs=1e-12)
