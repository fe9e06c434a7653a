"""adaseg's PQ against cityscapesscripts' packaged panopticapi (evaluatePanoptic and its
per-image core), on random cases with empty predictions, all-void GT, crowd, tiny
segments, classes absent from GT, predictions mostly on void."""

from __future__ import annotations

import copy
import json
import math
import os

import numpy as np
import pytest

from adaseg.data.panoptic_io import DataError
from adaseg.eval.pq import PQAccumulator, PQStats, pq_compute, pq_compute_per_image, pq_image
from panoptic_cases import CATEGORIES, make_cases, write_set

# the reference implementation (an install requirement: never skipped)
import cityscapesscripts.evaluation.evalPanopticSemanticLabeling as csp  # noqa: E402


def _write(tmp_path, seed, n):
    gts, preds, modes = make_cases(seed, n)
    gt_dir, pred_dir = str(tmp_path / "gt"), str(tmp_path / "pred")
    gt_json, pred_json = str(tmp_path / "gt.json"), str(tmp_path / "pred.json")
    write_set(gt_dir, gt_json, gts)
    write_set(pred_dir, pred_json, preds, images=False)
    return gts, preds, modes, gt_json, pred_json, gt_dir, pred_dir


def _assert_close(ours: dict, ref: dict):
    for group in ("All", "Things", "Stuff"):
        assert ours[group]["n"] == ref[group]["n"]
        for k in ("pq", "sq", "rq"):
            assert math.isclose(ours[group][k], ref[group][k], rel_tol=0, abs_tol=1e-9), (group, k)
    assert set(ours["per_class"]) == set(ref["per_class"])
    for cid, vals in ref["per_class"].items():
        for k in ("pq", "sq", "rq"):
            assert math.isclose(ours["per_class"][cid][k], vals[k], rel_tol=0, abs_tol=1e-9), (cid, k)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dataset_pq_matches_evaluate_panoptic(tmp_path, seed):
    _, _, _, gt_json, pred_json, gt_dir, pred_dir = _write(tmp_path, seed, 60)
    ref = csp.evaluatePanoptic(gt_json, gt_dir, pred_json, pred_dir, str(tmp_path / "ref.json"))
    ours = pq_compute(gt_json, pred_json, gt_dir, pred_dir)
    _assert_close(ours, ref)
    ours_mp = pq_compute(gt_json, pred_json, gt_dir, pred_dir, num_workers=2)
    _assert_close(ours_mp, ref)
    _assert_close(pq_compute(gt_json, pred_json), ref)  # folders default to the JSON paths minus .json


@pytest.mark.parametrize("seed", [3, 4])
def test_per_image_stats_match_reference_core(tmp_path, seed):
    gts, preds, modes, gt_json, pred_json, gt_dir, pred_dir = _write(tmp_path, seed, 48)
    gt = json.load(open(gt_json))
    pred = json.load(open(pred_json))
    cats = {c["id"]: c for c in gt["categories"]}
    _, per_image, _ = pq_compute_per_image(gt_json, pred_json, gt_dir, pred_dir)
    seen_modes = set()
    for k, (g, p) in enumerate(zip(gt["annotations"], pred["annotations"])):
        ref = csp.pq_compute_single_core(0, [(copy.deepcopy(g), copy.deepcopy(p))], gt_dir, pred_dir, cats)
        ours = per_image[k]
        for cid in cats:
            r, o = ref.pq_per_cat[cid], ours.per_class.get(cid)
            o_tuple = (o.tp, o.fp, o.fn) if o else (0, 0, 0)
            assert o_tuple == (r.tp, r.fp, r.fn), (k, modes[k], cid)
            assert math.isclose(o.iou if o else 0.0, r.iou, abs_tol=1e-12)
        seen_modes.add(modes[k])
        # the per-image PQ is the reference's All-PQ of that one image when defined
        if any(ref.pq_per_cat[c].tp + ref.pq_per_cat[c].fp + ref.pq_per_cat[c].fn for c in cats):
            assert math.isclose(ours.pq(), ref.pq_average(cats, isthing=None)[0]["pq"], abs_tol=1e-12)
        else:
            assert ours.pq() is None
    assert {"empty", "random", "void_heavy", "absent_class", "copy", "perturb"} <= seen_modes


def test_undefined_pq_is_none_and_groups_without_segments():
    # all-void GT and an empty prediction: no class counted, PQ undefined
    z = np.zeros((5, 6), dtype=np.int64)
    stats = pq_image(z, [], z, [], CATEGORIES)
    assert stats.pq() is None
    res = stats.summary(CATEGORIES)
    assert res["All"] == {"pq": None, "sq": None, "rq": None, "n": 0}
    assert res["per_class"][1] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    # a prediction lying entirely on void is ignored (not a false positive): still undefined
    p = np.full((5, 6), 9, dtype=np.int64)
    assert pq_image(z, [], p, [{"id": 9, "category_id": 3}], CATEGORIES).pq() is None
    # a GT stuff segment with an empty prediction: PQ 0 (one false negative)
    g = np.full((5, 6), 4, dtype=np.int64)
    s = pq_image(g, [{"id": 4, "category_id": 20, "iscrowd": 0, "area": 30}], z, [], CATEGORIES)
    assert s.pq() == 0.0 and s.per_class[20].fn == 1


def test_hand_computed_case():
    # GT: thing A (ids 1) 2x2, thing B (2) 2x2, rest void. Pred: A' exactly A plus one void
    # pixel (IoU 4/4 since void is removed from the union), B' covering half of B -> FN + FP.
    g = np.zeros((4, 4), dtype=np.int64)
    g[:2, :2], g[2:, 2:] = 1, 2
    p = np.zeros_like(g)
    p[:2, :2], p[0, 2] = 5, 5
    p[2, 2:] = 6
    gs = [{"id": 1, "category_id": 1, "iscrowd": 0, "area": 4}, {"id": 2, "category_id": 1, "iscrowd": 0, "area": 4}]
    ps = [{"id": 5, "category_id": 1}, {"id": 6, "category_id": 1}]
    s = pq_image(g, gs, p, ps, CATEGORIES)
    assert (s.per_class[1].tp, s.per_class[1].fp, s.per_class[1].fn) == (1, 1, 1)
    assert s.per_class[1].iou == 1.0
    assert s.pq() == pytest.approx(1.0 / 2.0)


def test_accumulator_and_serialisation():
    gts, preds, _ = make_cases(7, 20)
    acc = PQAccumulator(CATEGORIES)
    per = [acc.add(g[1], g[2], p[1], p[2]) for g, p in zip(gts, preds)]
    total = PQStats()
    for s in per:
        total += PQStats.from_dict(json.loads(json.dumps(s.to_dict())))
    assert total.summary(CATEGORIES) == acc.results()
    assert acc.num_images == 20


@pytest.mark.parametrize("problem", ["png_not_json", "json_not_png", "unknown_cat", "size", "missing_pred",
                                     "malformed", "missing_png"])
def test_bad_prediction_input_names_the_file(tmp_path, problem):
    gts, preds, _ = make_cases(11, 4)
    gt_dir, pred_dir = str(tmp_path / "gt"), str(tmp_path / "pred")
    gt_json, pred_json = str(tmp_path / "gt.json"), str(tmp_path / "pred.json")
    write_set(gt_dir, gt_json, gts)
    i, ids, segs = preds[1]
    if problem == "png_not_json":
        segs = segs[1:] if segs else segs
        ids = ids.copy()
        ids[0, 0] = 12345
        preds[1] = (i, ids, [s for s in segs if s["id"] != 12345])
        expect = "in the PNG but not in the JSON"
    elif problem == "json_not_png":
        preds[1] = (i, ids, segs + [{"id": 777, "category_id": 1}])
        expect = "in the JSON but not in the PNG"
    elif problem == "unknown_cat":
        ids = np.full_like(ids, 5)
        preds[1] = (i, ids, [{"id": 5, "category_id": 99}])
        expect = "unknown category_id 99"
    elif problem == "size":
        preds[1] = (i, np.zeros((ids.shape[0] + 1, ids.shape[1]), dtype=np.int64), [])
        expect = "differs from"
    elif problem == "missing_pred":
        preds = preds[:1] + preds[2:]
        expect = "no prediction for image_id 1"
    write_set(pred_dir, pred_json, preds, images=False)
    if problem == "malformed":
        with open(pred_json, "w") as f:
            f.write("{not json")
        expect = "malformed JSON"
    if problem == "missing_png":
        os.remove(os.path.join(pred_dir, "2.png"))
        expect = "PNG file not found"
    with pytest.raises(DataError, match=expect) as exc:
        pq_compute(gt_json, pred_json, gt_dir, pred_dir)
    assert pred_dir in str(exc.value) or pred_json in str(exc.value)
