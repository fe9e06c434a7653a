"""The evaluators (adaseg.eval.tasks): which ones score a (model task, data task) pair, and each
one's report figures, per-image parts and Step B quality on hand-computed cases (mask AP against
pycocotools' COCOeval run directly)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from adaseg.eval.flops import FlopCount
from adaseg.eval.image_parts import ImageParts, build_parts
from adaseg.eval.tasks import registry
from adaseg.eval.tasks.base import Evaluator, Suite, Summary
from adaseg.eval.tasks.detection import DETECTION
from adaseg.eval.tasks.instance import INSTANCE
from adaseg.eval.tasks.panoptic import PANOPTIC
from adaseg.eval.tasks.registry import QUALITY, suite_for, suite_named, sweep_keys
from adaseg.eval.tasks.semantic import SEMANTIC

CATEGORIES = [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 0}]


def _scorer(gts=None, image_ids=(10, 11)):
    """A dataset as the evaluators read it: 2 classes (dataset ids 1 thing, 2 stuff)."""
    to_id = {k: c["id"] for k, c in enumerate(CATEGORIES)}
    meta = SimpleNamespace(num_classes=2, ignore_label=255, class_names=["a", "b"],
                           to_dataset_id=lambda k: to_id[int(k)],
                           to_contiguous=lambda cid: {v: k for k, v in to_id.items()}[int(cid)])
    dataset = SimpleNamespace(records=[SimpleNamespace(image_id=i) for i in image_ids])
    return SimpleNamespace(meta=meta, categories=CATEGORIES, dataset=dataset, panoptic_gt=lambda i: gts[i])


# ---------------------------------------------------------------------- the choice
@pytest.mark.parametrize("model_task, data_task, tasks, quality, metric", [
    ("panoptic", "panoptic", ("semantic", "panoptic", "instance"), "panoptic", "pq"),
    ("panoptic", "semantic", ("semantic",), "semantic", "miou"),
    ("semantic", "semantic", ("semantic",), "semantic", "miou"),
    ("semantic", "panoptic", ("semantic",), "semantic", "miou"),
])
def test_suite_for_each_pair(model_task, data_task, tasks, quality, metric):
    suite = suite_for(model_task, data_task)
    assert tuple(e.task for e in suite.evaluators) == tasks
    assert suite.quality.task == quality and suite.metric == metric
    assert suite_named(metric) is suite


def test_figure_order_of_reports_parts_sweeps_and_compare():
    pq = suite_named("pq")
    assert pq.figure_names == ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st",
                               "mIoU", "pixel_acc", "AP", "AP50", "AP75", "mean_image_PQ")
    assert pq.primaries == ("PQ", "mIoU", "AP")
    assert suite_named("miou").figure_names == ("mIoU", "pixel_acc")
    assert suite_named("miou").primaries == ("mIoU",)
    assert suite_named("box_ap50").figure_names == ("AP_box", "AP50_box", "AP75_box", "APs_box", "APm_box", "APl_box")
    assert suite_named("box_ap50").primaries == ("AP_box",)
    assert sweep_keys() == ("PQ", "SQ", "RQ", "PQ_th", "PQ_st", "mIoU", "AP", "AP_box")
    assert QUALITY == {"pq": PANOPTIC, "miou": SEMANTIC, "box_ap50": DETECTION}
    assert PANOPTIC.part_names == ("tp", "fp", "fn", "iou_sum") and SEMANTIC.part_names == ("intersection", "union")


def test_unknown_suite_and_a_suite_without_quality_are_refused():
    with pytest.raises(ValueError, match="metric must be one of 'pq', 'box_ap50', 'miou'"):
        suite_named("box_ap")
    with pytest.raises(ValueError, match="no per-image quality"):
        Suite(evaluators=(INSTANCE,), quality=INSTANCE)


# ---------------------------------------------------------------------- semantic
def _semantic_batch():
    # image 0: GT [[0, 0], [1, 255]], prediction [[0, 1], [1, 1]] -> class 0: tp 1, fn 1;
    # class 1: tp 1, fp 1 (the ignored pixel does not count) -> IoU 1/2 and 1/2.
    # image 1: GT all 1, prediction all 1 -> class 1: tp 4; class 0 absent.
    gt = [torch.tensor([[0, 0], [1, 255]]), torch.tensor([[1, 1], [1, 1]])]
    pred = [torch.tensor([[0, 1], [1, 1]]), torch.tensor([[1, 1], [1, 1]])]
    batch = {"sizes": [(2, 2), (2, 2)], "targets": [{"semantic": g} for g in gt]}
    return batch, pred


def test_semantic_figures_parts_and_quality_by_hand():
    scorer = _scorer()
    batch, pred = _semantic_batch()
    records = [SEMANTIC.score(scorer, batch, j, j, pred[j]) for j in range(2)]
    s = SEMANTIC.summarize(scorer, records)
    # summed: class 0 tp 1 fp 0 fn 1 -> 1/2; class 1 tp 5 fp 1 fn 0 -> 5/6; pixels 6 of 7
    assert s.figures["mIoU"] == pytest.approx((1 / 2 + 5 / 6) / 2, abs=1e-15)
    assert s.figures["pixel_acc"] == pytest.approx(6 / 7, abs=1e-15)
    assert s.image_figures == {}
    assert s.part.tolist() == [[[1, 0, 1], [1, 1, 0]], [[0, 0, 0], [4, 0, 0]]]
    q0, parts0 = SEMANTIC.image_quality(scorer, batch, 0, 0, pred[0])
    q1, parts1 = SEMANTIC.image_quality(scorer, batch, 1, 1, pred[1])
    assert q0 == pytest.approx(0.5) and parts0 == [(0, (1.0, 2.0)), (1, (1.0, 2.0))]
    assert q1 == 1.0 and parts1 == [(1, (4.0, 4.0))]
    index = torch.tensor([[0, 0, 0], [0, 0, 1], [1, 0, 1]])
    values = torch.tensor([[1.0, 2.0], [1.0, 2.0], [4.0, 4.0]], dtype=torch.float64)
    assert SEMANTIC.quality_from_parts(index, values, 2, 1, "miou").flatten().tolist() == [0.5, 1.0]
    with pytest.raises(ValueError, match="not available"):
        SEMANTIC.quality_from_parts(index, values, 2, 1, "pq")


# ---------------------------------------------------------------------- panoptic
def _panoptic_case():
    """Image 0 (4x4): GT thing ``a`` (id 5) on the left half, stuff ``b`` (id 6) on the right;
    the prediction has ``a`` exactly and ``b`` on the right half's top three rows (the last
    row void): a IoU 1, b IoU 6/8 -> both TP, PQ (1 + 0.75) / 2. Image 1: empty GT and empty
    prediction -> PQ undefined."""
    gt0 = np.zeros((4, 4), np.int64)
    gt0[:, :2], gt0[:, 2:] = 5, 6
    gt_segments = [{"id": 5, "category_id": 1, "iscrowd": 0}, {"id": 6, "category_id": 2, "iscrowd": 0}]
    pred0 = torch.zeros(4, 4, dtype=torch.long)
    pred0[:, :2], pred0[:3, 2:] = 1, 2
    pred_segments = [{"id": 1, "category_id": 0}, {"id": 2, "category_id": 1}]  # contiguous classes
    gts = {0: (gt0, gt_segments), 1: (np.zeros((4, 4), np.int64), [])}
    preds = [(pred0, pred_segments), (torch.zeros(4, 4, dtype=torch.long), [])]
    return _scorer(gts), preds


def test_panoptic_figures_parts_and_quality_by_hand():
    scorer, preds = _panoptic_case()
    q0, parts0 = PANOPTIC.image_quality(scorer, {}, 0, 0, preds[0])
    q1, parts1 = PANOPTIC.image_quality(scorer, {}, 1, 1, preds[1])
    assert q0 == pytest.approx(0.875) and parts0 == [(0, (1.0, 0.0, 0.0, 1.0)), (1, (1.0, 0.0, 0.0, 0.75))]
    assert math.isnan(q1) and parts1 == []
    s = PANOPTIC.summarize(scorer, [PANOPTIC.score(scorer, {}, j, j, preds[j]) for j in range(2)])
    assert s.figures["PQ"] == pytest.approx(0.875) and s.figures["SQ"] == pytest.approx(0.875)
    assert s.figures["RQ"] == 1.0 and s.figures["PQ_th"] == 1.0 and s.figures["PQ_st"] == pytest.approx(0.75)
    assert s.image_figures == {"mean_image_PQ": pytest.approx(0.875)}  # the undefined image left out
    assert s.part.tolist() == [[[1, 0, 0, 1.0], [1, 0, 0, 0.75]], [[0, 0, 0, 0], [0, 0, 0, 0]]]
    index = torch.tensor([[0, 0, 0], [0, 0, 1]])
    values = torch.tensor([[1, 0, 0, 1.0], [1, 0, 0, 0.75]], dtype=torch.float64)
    got = {u: PANOPTIC.quality_from_parts(index, values, 2, 1, u) for u in ("pq", "sq", "rq")}
    assert got["pq"][0, 0] == pytest.approx(0.875) and got["rq"][0, 0] == 1.0 and math.isnan(got["sq"][1, 0])


def test_parts_recompute_every_evaluators_figures(tmp_path):
    """build_parts from the evaluators' summaries gives back the summaries' figures."""
    scorer, preds = _panoptic_case()
    batch, sem_pred = _semantic_batch()
    rows = [{"exit": 6, "image_id": i} for i in (10, 11)]
    summaries = {
        PANOPTIC: PANOPTIC.summarize(scorer, [PANOPTIC.score(scorer, {}, j, j, preds[j]) for j in range(2)]),
        SEMANTIC: SEMANTIC.summarize(scorer, [SEMANTIC.score(scorer, batch, j, j, sem_pred[j]) for j in range(2)]),
    }
    instance_records = [({"id": i, "height": 4, "width": 4}, [], []) for i in (10, 11)]
    summaries[INSTANCE] = INSTANCE.summarize(scorer, instance_records)
    flops = [FlopCount(total=2 * 10**9, scopes={"encoder": 10**9})] * 2
    parts = build_parts(rows, flops, parent_fingerprint="f" * 64, metric="pq", categories=CATEGORIES,
                        parts={e.part: s.part for e, s in summaries.items()})
    got = parts.metrics()
    for s in summaries.values():
        for k, v in {**s.figures, **s.image_figures}.items():
            if k != "per_class_iou":
                assert got[k] == pytest.approx(v, abs=1e-15) if v is not None else got[k] is None, k
    assert parts.seg is parts.parts["seg"] and parts.pq is parts.parts["pq"] and parts.ap is parts.parts["ap"]
    with pytest.raises(ValueError, match="needs seg and pq and ap parts"):
        parts.replace(metric="pq")
    with pytest.raises(ValueError, match="has no pq or ap parts"):
        ImageParts(**{**_common(parts), "metric": "miou", "seg": parts.seg, "pq": parts.pq, "ap": parts.ap})


def _common(parts: ImageParts) -> dict:
    return dict(image_ids=parts.image_ids, parent_fingerprint=parts.parent_fingerprint,
                category_ids=parts.category_ids, isthing=parts.isthing, exits=parts.exits,
                gflops_total=parts.gflops_total, gflops_encoder=parts.gflops_encoder)


# ---------------------------------------------------------------------- instance (pycocotools)
def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def test_instance_ap_equals_cocoeval():
    """Two images, three GT instances of thing ``a``, four scored detections: the evaluator's AP
    (and its parts' AP) is COCOeval's on the same dataset and results."""
    rng = np.random.default_rng(0)
    images, gt, dt = [], [], []
    for image_id in (10, 11):
        images.append({"id": image_id, "height": 8, "width": 8})
        for y in ((0, 4) if image_id == 10 else (2,)):
            m = np.zeros((8, 8), bool)
            m[y:y + 3, 1:6] = True
            gt.append({"image_id": image_id, "category_id": 1, "segmentation": _rle(m), "area": float(m.sum()),
                       "iscrowd": 0, "bbox": [1.0, float(y), 5.0, 3.0]})
            shifted = np.roll(m, int(rng.integers(0, 3)), axis=1)
            dt.append({"image_id": image_id, "category_id": 1, "segmentation": _rle(shifted),
                       "score": float(rng.uniform())})
    dt.append({"image_id": 11, "category_id": 1, "segmentation": _rle(np.eye(8, dtype=bool)), "score": 0.9})
    records = [(img, [a for a in gt if a["image_id"] == img["id"]], [d for d in dt if d["image_id"] == img["id"]])
               for img in images]
    s = INSTANCE.summarize(_scorer(), records)

    coco = COCO()
    coco.dataset = {"images": images, "annotations": [dict(a, id=i + 1) for i, a in enumerate(gt)],
                    "categories": [CATEGORIES[0]]}
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes([dict(d) for d in dt]), iouType="segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert s.figures == {"AP": pytest.approx(ev.stats[0], abs=1e-12), "AP50": pytest.approx(ev.stats[1], abs=1e-12),
                         "AP75": pytest.approx(ev.stats[2], abs=1e-12)}
    t = INSTANCE.part_tensors(s.part)
    back = INSTANCE.part_from_tensors(t)
    parts = SimpleNamespace(num_images=2, id_rank=np.arange(2))
    assert INSTANCE.figures_of(back, parts, None, None, {"AP", "AP50", "AP75"}) == pytest.approx(s.figures)


# ---------------------------------------------------------------------- the seam for a new task
class _CountEvaluator(Evaluator):
    """A toy task: the number of predicted objects per image (its figure: the mean count)."""

    task = record = part = "count"
    figures = ("count_mean",)
    primary = "count_mean"

    def score(self, scorer, batch, j, index, prediction):
        return len(prediction)

    def summarize(self, scorer, records):
        return Summary({"count_mean": sum(records) / len(records)}, {}, np.asarray(records, dtype=np.int64))

    def check_part(self, part, n, c):
        if part.shape != (n,):
            raise ValueError(f"ImageParts: count has shape {part.shape}")

    def part_tensors(self, part):
        return {"count": part}

    def part_from_tensors(self, tensors):
        return tensors.get("count")

    def figures_of(self, part, parts, idx, weight, want):
        return {"count_mean": float(part.mean() if idx is None else part[idx].mean())}


def test_a_new_task_plugs_in_through_the_registry_alone(monkeypatch, tmp_path):
    """A suite of a new evaluator (here with semantic as the quality) is built, saved, loaded
    and resampled by ImageParts with no change but the registry's entries."""
    from adaseg.eval.image_parts import load_parts

    count = _CountEvaluator()
    suite = Suite(evaluators=(SEMANTIC, count), quality=SEMANTIC)
    monkeypatch.setitem(registry.EVALUATORS, "count", count)
    monkeypatch.setitem(registry.SUITE_NAMES, "miou", suite)
    scorer = _scorer()
    batch, pred = _semantic_batch()
    parts = build_parts([{"exit": 3, "image_id": 10}, {"exit": 5, "image_id": 11}],
                        [FlopCount(total=10**9, scopes={"encoder": 10**9})], parent_fingerprint="f" * 64,
                        metric="miou", categories=CATEGORIES,
                        parts={"seg": SEMANTIC.part_of([SEMANTIC.score(scorer, batch, j, j, pred[j]) for j in range(2)],
                                                       CATEGORIES),
                               "count": count.summarize(scorer, [2, 5]).part})
    assert parts.metric_names == ("mIoU", "pixel_acc", "count_mean", "gflops_encoder_mean", "gflops_total_mean",
                                  "exit_mean")
    assert parts.metrics(np.array([1, 1]), keys=["count_mean", "exit_mean"]) == {"count_mean": 5.0, "exit_mean": 5.0}
    report = tmp_path / "eval_x.json"
    digest = parts.save(tmp_path / "eval_x.parts.safetensors")
    report.write_text('{"settings": {}, "metrics": {}, "info": {}, "parts": {"file": "eval_x.parts.safetensors", '
                      f'"content_sha256": "{digest}"}}}}')
    loaded = load_parts(report)
    assert loaded.count.tolist() == [2, 5] and loaded.metrics() == parts.metrics()
