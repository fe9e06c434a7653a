"""The four commands with ECO-DETR (``detr_tiny``, a detection model) on a tiny synthetic
folder: derive records each image's box AP50 of single-exit forwards (checked by an independent
implementation here), eval's box AP equals pycocotools on JSON files (ground truth from the
panoptic files by :func:`adaseg.eval.ap.instances_from_panoptic`, results from forwards here)."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from recipe_testing import TRAIN_FAST, invoke_json, write_folder

from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.runs.run_dir import RunDir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = write_folder(tmp_path_factory.mktemp("data") / "synth")
    root = tmp_path_factory.mktemp("runs") / "detr"
    invoke_json("train-parent", "--model", "detr_tiny", "--data", folder, *TRAIN_FAST, "--run", root)
    invoke_json("derive", "--run", root, "--threads", "1")
    invoke_json("fit-gate", "--beta", "0", "--run", root, "--epochs", "2")
    return RunDir(root), folder


def _iou(a, b) -> float:
    """IoU of two xywh boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _ap50_by_hand(gt: list[tuple[int, list]], dets: list[tuple[int, list, float]]) -> float:
    """Mean over the classes with boxes of the image's AP at IoU 0.5: detections by score (stable),
    each taking the free box of its class with the highest IoU >= 0.5 (the synthetic set has no
    crowd); precision made non-increasing from the right, read at COCOeval's recalls 0, 0.01, ..., 1."""
    aps = []
    for c in sorted({g[0] for g in gt}):
        boxes = [g[1] for g in gt if g[0] == c]
        free = [True] * len(boxes)
        hits = []
        for _, box, _ in sorted((d for d in dets if d[0] == c), key=lambda d: -d[2]):
            cands = [(_iou(box, b), j) for j, b in enumerate(boxes) if free[j] and _iou(box, b) >= 0.5]
            if cands:
                free[max(cands)[1]] = False
            hits.append(bool(cands))
        recall = [sum(hits[:i + 1]) / len(boxes) for i in range(len(hits))]
        precision = [sum(hits[:i + 1]) / (i + 1) for i in range(len(hits))]
        best = [max(precision[i:]) for i in range(len(precision))]
        aps.append(sum(next((best[i] for i in range(len(hits)) if recall[i] >= t), 0.0)
                       for t in np.linspace(0.0, 1.0, 101)) / 101)  # COCOeval's recall thresholds
    return sum(aps) / len(aps) if aps else math.nan


def _gt_boxes(dataset, i) -> list[tuple[int, list]]:
    gt_map, segments = dataset.panoptic_gt(i)
    things = {c.id for c in dataset.meta.categories if c.isthing}
    out = []
    for s in segments:
        ys, xs = np.nonzero(gt_map == s["id"])
        if s["category_id"] in things and len(ys):
            out.append((s["category_id"], [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]))
    return out


def _detections(model, dataset, i, exit_: int) -> list[tuple[int, list, float]]:
    from adaseg.data import collate

    batch = collate([dataset[i]])
    with torch.no_grad():
        out = model(batch["images"], batch["padding_mask"], AdaptiveSettings(exits=exit_))
    (p,) = model.postprocess(out, batch["sizes"], output_sizes=batch["orig_sizes"])
    things = {c.id for c in dataset.meta.categories if c.isthing}
    dets = []
    for box, score, label in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
        cid = dataset.meta.to_dataset_id(label)
        if cid in things:
            dets.append((cid, [box[0], box[1], box[2] - box[0], box[3] - box[1]], score))
    return dets


def _dataset(run, split):
    from adaseg.data import build_dataset

    return build_dataset(json.loads(run.config_path.read_text())["data"], split, train=False)


def test_derive_records_box_ap50_of_single_exit_forwards(run):
    from adaseg.runs.derived import DerivedDataset
    from adaseg.runs.parent import load_parent

    rd, _ = run
    derived = DerivedDataset.load(rd.derived_path)
    assert derived.metric == "box_ap50" and derived.exit_list == [2, 3, 4, 5, 6]
    model, _ = load_parent(rd.parent_path)
    dataset = _dataset(rd, "train")
    for i in range(len(dataset)):
        gt = _gt_boxes(dataset, i)
        for col, k in enumerate(derived.exit_list):
            want = _ap50_by_hand(gt, _detections(model, dataset, i, k))
            got = float(derived.quality[i, col])
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-9)


def test_eval_box_ap_equals_pycocotools_on_files(run, tmp_path):
    from adaseg.data.build import panoptic_gt_paths
    from adaseg.eval.ap import instances_from_panoptic
    from adaseg.runs.parent import load_parent

    rd, folder = run
    report = invoke_json("eval", "--run", rd.root, "--exit", "4", "--batch-size", "2", "--warmup", "0",
                         "--timed", "1", "--threads", "1", "--gate", "none")
    m = report["metrics"]
    assert set(m) == {"AP_box", "AP50_box", "AP75_box", "APs_box", "APm_box", "APl_box"}
    gt = instances_from_panoptic(*panoptic_gt_paths(folder, "val"))
    model, _ = load_parent(rd.parent_path)
    dataset = _dataset(rd, "val")
    results = [{"image_id": dataset.records[i].image_id, "category_id": c, "bbox": [float(v) for v in b], "score": s}
               for i in range(len(dataset)) for c, b, s in _detections(model, dataset, i, 4)]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        ev = COCOeval(coco, coco.loadRes(str(tmp_path / "dt.json")), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for key, want in zip(("AP_box", "AP50_box", "AP75_box", "APs_box", "APm_box", "APl_box"), ev.stats[:6]):
        assert m[key] == (None if want < 0 else pytest.approx(float(want), abs=1e-4)), key
