"""adaseg's mIoU against cityscapesscripts' evalPixelLevelSemanticLabeling.evaluateImgLists
(run on random Cityscapes label-id images in a temp dir), plus a hand-computed case."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from adaseg.data.panoptic_io import DataError
from adaseg.eval.miou import ConfusionMatrix, miou_folders

# the reference implementation (an install requirement: never skipped)
import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as csl  # noqa: E402
from cityscapesscripts.helpers.labels import labels as cs_labels  # noqa: E402

EVAL = [lab for lab in cs_labels if not lab.ignoreInEval]
ALL_IDS = [lab.id for lab in cs_labels if lab.id >= 0]
ID_TO_TRAIN = np.full(256, 255, dtype=np.int64)
for lab in cs_labels:
    if lab.id >= 0 and not lab.ignoreInEval:
        ID_TO_TRAIN[lab.id] = lab.trainId


def _reference(tmp_path, gts, preds):
    args = csl.CArgs()
    for k, v in vars(csl.args).items():
        setattr(args, k, v)
    args.evalInstLevelScore = False
    args.JSONOutput = False
    args.quiet = True
    args.evalPixelAccuracy = False
    gt_files, pred_files = [], []
    for i, (g, p) in enumerate(zip(gts, preds)):
        gf, pf = str(tmp_path / f"g{i}_gtFine_labelIds.png"), str(tmp_path / f"p{i}.png")
        Image.fromarray(g.astype(np.uint8)).save(gf)
        Image.fromarray(p.astype(np.uint8)).save(pf)
        gt_files.append(gf)
        pred_files.append(pf)
    res = csl.evaluateImgLists(pred_files, gt_files, args)
    return {lab.trainId: res["classScores"][lab.name] for lab in EVAL}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_miou_matches_cityscapes(tmp_path, seed):
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    eval_ids = np.array([lab.id for lab in EVAL])
    for _ in range(6):
        g = rng.choice(ALL_IDS, size=(20, 30))
        if seed == 2:  # some classes absent from GT and prediction
            g = np.where(np.isin(g, eval_ids[:5]), 0, g)
        p = np.where(rng.uniform(size=g.shape) < 0.5, g, rng.choice(eval_ids, size=g.shape))
        p = np.where(np.isin(p, eval_ids), p, rng.choice(eval_ids, size=g.shape))
        if seed == 2:
            p = np.where(np.isin(p, eval_ids[:5]), eval_ids[6], p)
        gts.append(g)
        preds.append(p)
    ref = _reference(tmp_path, gts, preds)
    cm = ConfusionMatrix(num_classes=19)
    for g, p in zip(gts, preds):
        cm.update(ID_TO_TRAIN[p], ID_TO_TRAIN[g])
    ours = cm.iou()
    for train_id, ref_iou in ref.items():
        if math.isnan(ref_iou):
            assert math.isnan(ours[train_id]), train_id
        else:
            assert math.isclose(ours[train_id], ref_iou, abs_tol=1e-12), train_id
    valid = [v for v in ref.values() if not math.isnan(v)]
    assert math.isclose(cm.results()["mIoU"], sum(valid) / len(valid), abs_tol=1e-12)
    if seed == 2:
        assert cm.results()["per_class"]["0"] is None


def test_hand_computed_and_ignore():
    gt = np.array([[0, 0, 1, 255], [1, 1, 2, 2]])
    pr = np.array([[0, 1, 1, 0], [1, 255, 2, 0]])
    cm = ConfusionMatrix(num_classes=4)
    cm.update(pr, gt)
    # class 0: tp 1, fn 1 (pred 1), fp 1 (on gt 2) -> 1/3 ; class 1: tp 2, fn 1 (pred 255), fp 1 -> 2/4
    # class 2: tp 1, fn 1, fp 0 -> 1/2 ; class 3: absent -> NaN, not in the mean
    iou = cm.iou()
    assert iou[:3].tolist() == pytest.approx([1 / 3, 2 / 4, 1 / 2])
    assert math.isnan(iou[3])
    assert cm.results()["mIoU"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)


@pytest.mark.parametrize("problem", ["out_of_range", "size", "missing"])
def test_bad_semantic_input(tmp_path, problem):
    gd, pd = tmp_path / "gt", tmp_path / "pred"
    gd.mkdir()
    pd.mkdir()
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(gd / "a.png")
    if problem == "out_of_range":
        Image.fromarray(np.full((4, 5), 9, np.uint8)).save(pd / "a.png")
        expect = "predicted label 9"
    elif problem == "size":
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(pd / "a.png")
        expect = "differs"
    else:
        expect = "prediction missing"
    with pytest.raises(DataError, match=expect) as exc:
        miou_folders(str(gd), str(pd), num_classes=3)
    assert str(pd / "a.png") in str(exc.value)
