"""``adaseg predict --task instance`` (COCO results that `adaseg score instance` scores to eval's
AP) and a semantic model (Segmenter: label PNGs == an independent forward's argmax, paused
positions == the model's record)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from recipe_testing import invoke, invoke_json


def test_instance_task_scores_the_eval_ap(tmp_path, run, folder):
    from adaseg.data.build import panoptic_gt_paths

    out = tmp_path / "inst"
    done = invoke("predict", "--run", run, "--data", folder, "--out", out, "--task", "instance", "--gate", "none",
                  "--batch-size", "2", "--threads", "1")
    assert done.exit_code == 0, done.output + repr(done.exception)
    report = invoke_json("eval", "--run", run, "--gate", "none", "--threads", "1", "--warmup", "0", "--timed", "1",
                         "--batch-size", "2", "--name", "predict_instance_check")
    gt_json, gt_dir = panoptic_gt_paths(folder, "val")
    scored = invoke("score", "instance", "--pred-json", out / "instances.json", "--panoptic-json", gt_json,
                    "--panoptic-dir", gt_dir, "--json")
    assert scored.exit_code == 0, scored.output
    ap = json.loads(scored.output)
    assert math.isclose(ap["AP"], report["metrics"]["AP"], abs_tol=1e-12) or (ap["AP"] < 0 and report["metrics"]["AP"] < 0)
    assert (out / "overlay").is_dir() and not (out / "predictions.json").exists()


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory, folder):
    root = tmp_path_factory.mktemp("runs") / "seg"
    invoke_json("train-parent", "--model", "segmenter_tiny", "--data", folder, "--iters", "2", "--batch-size", "2",
                "--init", "none", "--threads", "1", "--run", root)
    return root


def test_semantic_model_writes_label_pngs_and_its_pausing(tmp_path, seg_run, folder):
    from adaseg.data import build_dataset, collate
    from adaseg.models.adaptive.settings import AdaptiveSettings
    from adaseg.runs.parent import load_parent

    out = tmp_path / "seg"
    done = invoke("predict", "--run", seg_run, "--data", folder, "--out", out, "--pause", "2:0.5", "--threads", "1")
    assert done.exit_code == 0, done.output + repr(done.exception)
    assert not (out / "predictions.json").exists() and not (out / "panoptic").exists()
    model, _ = load_parent(Path(seg_run) / "checkpoints" / "parent.safetensors")
    dataset = build_dataset(folder, "val")
    summary = json.loads((out / "predict.json").read_text())
    assert len(summary["images"]) == len(dataset)
    for i, rec in enumerate(summary["images"]):
        batch = collate([dataset[i]])
        with torch.no_grad():
            o = model(batch["images"], batch["padding_mask"], AdaptiveSettings(pause="2:0.5"))
        expected = model.postprocess(o, batch["sizes"], task="semantic", output_sizes=batch["orig_sizes"])[0]
        label = np.asarray(Image.open(out / rec["files"]["semantic"]["path"]))
        assert label.dtype == np.uint8 and np.array_equal(label, expected.numpy())
        written = json.loads((out / rec["files"]["compute_json"]["path"]).read_text())
        assert [(s["layer"], sorted(s["positions"])) for s in written["paused_positions"]] == \
            [(r.layer, sorted(r.positions[0].tolist())) for r in o.paused]
