"""adaseg predict on a detection model (DETR): boxes drawn where they are, COCO results that
are the model's own post-processed boxes, the refusals.

The model is a tiny random transformers ``DetrForObjectDetection`` imported with
``adaseg import-weights --hf`` (the HF test helper of tests/models/test_detr_hf_parity.py):
9 classes, as the synthetic folder; skipped without transformers. Oracles: the outline pixels
of a box drawn on a plain image are read back at coordinates computed by hand; the results
file is compared with the model's logits and boxes converted in this file (softmax without
"no object", cxcywh -> xywh in pixels, contiguous -> dataset ids, things only) and loaded by
pycocotools.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from recipe_testing import invoke, invoke_json

from adaseg.data.meta import Category
from adaseg.predict.boxes import box_overlay, draw_boxes, outline_width
from adaseg.predict.drawing import upscale_factor
from adaseg.predict.result import Prediction

RED, BLUE = (220, 20, 60), (0, 0, 230)
CATS = (Category(id=3, name="disc", isthing=True, color=RED), Category(id=7, name="ring", isthing=True, color=BLUE))


def _prediction(h: int, w: int, detections, threshold=0.5) -> Prediction:
    return Prediction(name="x", size=(h, w), task="detection", exit=6, depth=6, exit_source="full",
                      token_shapes=[(2, 2)], input_size=(h, w), valid_size=(h, w),
                      image=np.zeros((h, w, 3), dtype=np.uint8), detections=detections, score_threshold=threshold,
                      gflops={"total": 1.5, "encoder": 0.25})


def test_box_outline_pixels_sit_on_the_box_edges():
    h, w = 48, 64
    k = upscale_factor(h, w)
    assert k == 6  # ceil(256 / 48): the picture is 288 x 384
    kept = {"category_id": 3, "score": 0.9, "box": [10.0, 8.0, 40.0, 30.0]}
    low = {"category_id": 7, "score": 0.3, "box": [44.0, 20.0, 60.0, 44.0]}  # under the 0.5 threshold
    img = draw_boxes(Image.new("RGB", (w * k, h * k)), _prediction(h, w, [kept, low]), CATS, k)
    a = np.asarray(img)
    lw = outline_width(k)
    # by hand: left col 10*6 = 60, right col 40*6 - 1 = 239, top row 8*6 = 48, bottom row 30*6 - 1 = 179
    mid_row, mid_col = (48 + 179) // 2, (60 + 239) // 2
    for r, c in [(mid_row, 60), (mid_row, 60 + lw - 1), (mid_row, 239), (mid_row, 239 - lw + 1),
                 (179, mid_col), (179 - lw + 1, mid_col), (48, 230), (48 + lw - 1, 230)]:
        assert tuple(a[r, c]) == RED, (r, c, a[r, c])
    for r, c in [(mid_row, 59), (mid_row, 60 + lw), (mid_row, 240), (mid_row, 239 - lw), (180, mid_col),
                 (179 - lw, mid_col), (48 + lw, 230), (mid_row, mid_col)]:
        assert tuple(a[r, c]) == (0, 0, 0), (r, c, a[r, c])
    # the tag "disc 0.90" is above the box: rows just above the top edge at its left end are red
    assert tuple(a[47, 61]) == RED
    # the 0.3 box is not drawn: its edges stay black
    for r, c in [(32 * 6, 44 * 6), (32 * 6, 60 * 6 - 1), (20 * 6, 52 * 6), (44 * 6 - 1, 52 * 6)]:
        assert tuple(a[r, c]) == (0, 0, 0), (r, c)


def test_overlay_keeps_the_image_at_the_origin_and_writes_the_compute_below():
    p = _prediction(48, 64, [{"category_id": 7, "score": 0.8, "box": [0.0, 0.0, 64.0, 48.0]}])
    img = np.asarray(box_overlay(p, CATS))
    k = 6
    assert img.shape[1] == 64 * k and img.shape[0] > 48 * k  # the legend strip below the image
    # a box over the whole image: its outline is the picture's border (the tag goes inside, below it)
    assert tuple(img[100, 0]) == BLUE and tuple(img[100, 64 * k - 1]) == BLUE and tuple(img[48 * k - 1, 100]) == BLUE
    assert tuple(img[0, 300]) == BLUE


transformers = pytest.importorskip("transformers", reason="transformers (test extra) is not installed")


@pytest.fixture(scope="module")
def detr(tmp_path_factory):
    """An imported random 9-class DETR checkpoint (kind ``detr``)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))
    from test_detr_hf_parity import _hf_model

    spec = dict(backbone=dict(embedding_size=8, hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 2, 1],
                              layer_type="basic"),
                d_model=16, encoder_layers=3, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                encoder_ffn_dim=24, decoder_ffn_dim=24, num_queries=5, labels=9)
    root = tmp_path_factory.mktemp("detr")
    _hf_model(spec, seed=5).save_pretrained(root / "hf")
    out = root / "detr.safetensors"
    res = invoke("import-weights", "--hf", root / "hf", "--out", out)
    assert res.exit_code == 0, res.output
    return out


def _expected_results(detr, folder) -> list[dict]:
    """Every val image's boxes from the model's raw heads, converted here."""
    from adaseg.data import build_dataset
    from adaseg.runs.parent import load_parent

    model, _ = load_parent(detr)
    ds = build_dataset(folder, "val")
    things = {c.id for c in ds.meta.categories if c.isthing}
    ids = [c.id for c in ds.meta.categories]
    want = []
    for i, rec in enumerate(ds.records):
        x = ds[i]["image"][None]
        with torch.no_grad():
            heads = model(x, None).heads
        prob = heads["pred_logits"][0].softmax(-1)[:, :-1]
        h, w = ds[i]["orig_size"]
        assert tuple(x.shape[-2:]) == (h, w)  # synthetic: native size, no resize
        for q in range(prob.shape[0]):
            label = int(prob[q].argmax())
            cx, cy, bw, bh = heads["pred_boxes"][0, q].tolist()
            if ids[label] not in things:
                continue
            want.append({"image_id": rec.image_id, "category_id": ids[label], "score": float(prob[q, label]),
                         "bbox": [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]})
    return want


def test_results_file_is_the_models_boxes(detr, folder, tmp_path):
    out = tmp_path / "p"
    res = invoke("predict", "--parent", detr, "--data", folder, "--out", out, "--threads", "1")
    assert res.exit_code == 0, res.output
    got = json.loads((out / "detections.json").read_text())
    want = _expected_results(detr, folder)
    key = lambda d: (str(d["image_id"]), -d["score"], d["bbox"][0])  # noqa: E731
    got, want = sorted(got, key=key), sorted(want, key=key)
    assert len(got) == len(want) > 0
    for g, e in zip(got, want):
        assert g["image_id"] == e["image_id"] and g["category_id"] == e["category_id"]
        assert g["score"] == pytest.approx(e["score"], abs=1e-5)
        assert g["bbox"] == pytest.approx(e["bbox"], abs=1e-3)
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {"images": [{"id": i} for i in {d["image_id"] for d in got}],
                  "categories": [{"id": c} for c in range(10)], "annotations": []}
    gt.createIndex()
    assert len(gt.loadRes(str(out / "detections.json")).getAnnIds()) == len(got)
    summary = json.loads((out / "predict.json").read_text())
    assert summary["settings"]["task"] == "detection" and summary["settings"]["score_threshold"] == 0.5
    assert "detections" in summary["files"] and len(list((out / "overlay").iterdir())) == 4
    assert not (out / "predictions.json").exists() and not (out / "panoptic").exists()


def test_a_run_of_it_with_a_gate_and_pausing(detr, folder, tmp_path):
    run = tmp_path / "run"
    assert invoke("init-run", "--from", detr, "--data", folder, "--run", run).exit_code == 0
    invoke_json("derive", "--run", run, "--threads", "1")
    invoke_json("fit-gate", "--beta", "0", "--run", run, "--epochs", "2")
    out = tmp_path / "p"
    res = invoke("predict", "--run", run, "--out", out, "--pause", "2:0.5", "--pause-mode", "random",
                 "--score-threshold", "0", "--threads", "1")
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "predict.json").read_text())
    assert summary["settings"]["score_threshold"] == 0.0 and summary["settings"]["gate"]
    for rec in summary["images"]:
        assert rec["exit_source"] == "gate" and rec["gflops"]["total"] > 0 and "compute" in rec["files"]
    # threshold 0: every thing-class box of the file is drawn, so the legend counts them all
    assert len(json.loads((out / "detections.json").read_text())) > 0


@pytest.mark.parametrize("args, expect", [
    (("--score-threshold", "1.5"), "0<=x<=1"),
    (("--score-threshold", "nan"), "not a finite number"),
    (("--task", "panoptic"), "predicts boxes (detection) only"),
    (("--pause", "2:0.5"), "auxiliary decoders are untrained"),
    (("--pause", "2:0.5", "--pause-mode", "random", "--pause-output", "aux"), "DETR has no early-exit output"),
    (("--run", "somewhere"), "--parent and --run are exclusive"),
    (("--gate", "latest"), "is a checkpoint, not a run"),
])
def test_bad_options_are_refused_and_nothing_written(detr, folder, tmp_path, args, expect):
    out = tmp_path / "p"
    res = invoke("predict", "--parent", detr, "--data", folder, "--out", out, *args)
    assert res.exit_code != 0 and expect in res.output, res.output
    assert res.output.strip().splitlines()[-1].startswith("Error:") and not out.exists()


def test_score_threshold_is_refused_for_a_segmentation_model(run, tmp_path):
    out = tmp_path / "p"
    res = invoke("predict", "--run", run, "--out", out, "--score-threshold", "0.3")
    assert res.exit_code == 2 and "picks the boxes drawn by a detection model" in res.output, res.output
    assert not out.exists()


def test_python_api_validates_the_threshold(detr, folder):
    from adaseg.predict.predictor import PredictError, PredictTypeError, Predictor

    with pytest.raises(PredictTypeError, match="score_threshold"):
        Predictor(detr, data=folder, score_threshold="0.5")
    with pytest.raises(PredictError, match=r"in \[0, 1\]"):
        Predictor(detr, data=folder, score_threshold=math.inf)
    p = Predictor(detr, data=folder, score_threshold=0.25)([np.zeros((40, 50, 3), dtype=np.uint8)])[0]
    assert p.task == "detection" and p.score_threshold == 0.25 and p.size == (40, 50)
    assert all(len(d["box"]) == 4 for d in p.detections)


def test_coco_detection_data_scores_with_its_own_instances_file(folder, tmp_path):
    """On ``coco-det:`` data the results file's image and category ids are the instances JSON's:
    pycocotools scores it against that file as it is (a random model: the AP is not the point)."""
    import contextlib
    import io
    import sys
    from pathlib import Path

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))
    from test_detr_hf_parity import _hf_model

    spec = dict(backbone=dict(embedding_size=8, hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 2, 1],
                              layer_type="basic"),
                d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                encoder_ffn_dim=24, decoder_ffn_dim=24, num_queries=6, labels=5)  # the set's 5 box classes
    _hf_model(spec, seed=2).save_pretrained(tmp_path / "hf")
    ckpt = tmp_path / "detr5.safetensors"
    assert invoke("import-weights", "--hf", tmp_path / "hf", "--out", ckpt).exit_code == 0
    out = tmp_path / "p"
    res = invoke("predict", "--parent", ckpt, "--data", f"coco-det:{folder}", "--out", out, "--threads", "1")
    assert res.exit_code == 0, res.output
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(Path(folder) / "annotations" / "instances_val.json"))
        results = json.loads((out / "detections.json").read_text())
        assert {d["image_id"] for d in results} == set(gt.getImgIds())
        assert {d["category_id"] for d in results} <= set(gt.getCatIds())
        e = COCOeval(gt, gt.loadRes(results), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    assert len(results) == 6 * len(gt.getImgIds())  # every query of every image: all 5 classes have boxes
    assert 0.0 <= e.stats[0] <= 1.0
