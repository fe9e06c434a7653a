"""SETR-PAUMER through the commands (PAUMER App. J): ``train-parent --recipe pause`` trains
it (random pause layer/ratio, auxiliary loss), ``eval --pause`` reports the mIoU of the
paused forward (computed by hand here), ``sweep`` and ``predict`` run on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from recipe_testing import TRAIN_FAST, invoke_json, write_folder

from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.runs.run_dir import RunDir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = write_folder(tmp_path_factory.mktemp("data") / "synth")
    root = tmp_path_factory.mktemp("runs") / "setr"
    invoke_json("train-parent", "--model", "setr_tiny", "--data", folder, *TRAIN_FAST, "--recipe", "pause",
                "--run", root)
    return RunDir(root)


def test_eval_pause_reports_the_paused_forwards_miou(run):
    from adaseg.data import build_dataset, collate
    from adaseg.runs.parent import load_parent

    report = invoke_json("eval", "--run", run.root, "--pause", "3:0.4", "--limit", "3", "--batch-size", "3",
                         "--warmup", "0", "--timed", "1", "--threads", "1")
    model, _ = load_parent(run.parent_path)
    assert type(model).__name__ == "SETR" and report["info"]["model"] == "setr_tiny"
    dataset = build_dataset(json.loads(run.config_path.read_text())["data"], "val", train=False)
    k = dataset.meta.num_classes
    inter, union = np.zeros(k), np.zeros(k)
    for i in range(3):
        batch = collate([dataset[i]])
        h, w = batch["sizes"][0]
        with torch.no_grad():
            out = model(batch["images"], batch["padding_mask"], AdaptiveSettings(pause="3:0.4"))
        pred = out.heads["sem_logits"][0, :, :h, :w].argmax(0).numpy()
        gt = batch["targets"][0]["semantic"][:h, :w].numpy()
        for c in range(k):
            inter[c] += np.sum((pred == c) & (gt == c))
            union[c] += np.sum(((pred == c) | (gt == c)) & (gt != 255))
    assert report["metrics"]["mIoU"] == pytest.approx(float(np.mean(inter[union > 0] / union[union > 0])), abs=1e-9)


def test_sweep_and_predict_run_on_it(run, tmp_path):
    data = invoke_json("sweep", "--run", run.root, "--exits", "6", "--betas", "none", "--pause", "2:0.5",
                       "--modes", "entropy", "--limit", "2", "--bootstrap", "0", "--threads", "1")
    assert sorted(r["pause"] or "" for r in data["rows"]) == ["", "2:0.5"]
    assert all(r["mIoU"] is not None for r in data["rows"])
    out = tmp_path / "pred"
    from recipe_testing import invoke

    result = invoke("predict", "--run", run.root, "--out", out, "--limit", "1", "--gate", "none", "--pause", "2:0.5",
                    "--threads", "1")
    assert result.exit_code == 0, result.output
    assert len(list((out / "semantic").iterdir())) == 1 and len(list((out / "compute").glob("*.png"))) == 1
