"""PAUMER's early exit through ``eval``, ``sweep``, ``predict`` and the Python API: the
option reaches the model (report named and recorded as such, mIoU of the early-exit
forward computed by hand here), the compute picture hatches exactly the tokens an auxiliary
decoder labelled, and every combination where early exit is idle or undefined is refused
in one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from recipe_testing import TRAIN_FAST, invoke, invoke_json, refused, write_folder

import adaseg
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.runs.run_dir import RunDir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = write_folder(tmp_path_factory.mktemp("data") / "synth")
    root = tmp_path_factory.mktemp("runs")
    invoke_json("train-parent", "--model", "segmenter_tiny", "--data", folder, *TRAIN_FAST, "--recipe", "pause",
                "--run", root / "seg")
    invoke_json("train-parent", "--model", "m2f_tiny", "--data", folder, *TRAIN_FAST, "--recipe", "pause",
                "--run", root / "m2f")
    return RunDir(root / "seg"), RunDir(root / "m2f")


def test_eval_reports_the_early_exit_forward(runs):
    from adaseg.data import build_dataset, collate
    from adaseg.runs.parent import load_parent

    seg, _ = runs
    report = invoke_json("eval", "--run", seg.root, "--pause", "2:0.5", "--pause-output", "aux", "--limit", "3",
                         "--batch-size", "3", "--warmup", "0", "--timed", "1", "--threads", "1")
    assert report["settings"]["pause_output"] == "aux" and report["settings"]["name"].endswith("earlyexit_limit3")
    model, _ = load_parent(seg.parent_path)
    dataset = build_dataset(json.loads(seg.config_path.read_text())["data"], "val", train=False)
    inter = np.zeros(dataset.meta.num_classes)
    union = np.zeros(dataset.meta.num_classes)
    for i in range(3):
        batch = collate([dataset[i]])
        h, w = batch["sizes"][0]
        with torch.no_grad():
            out = model(batch["images"], batch["padding_mask"], AdaptiveSettings(pause="2:0.5", pause_output="aux"))
        pred = out.heads["sem_logits"][0, :, :h, :w].argmax(0).numpy()
        gt = batch["targets"][0]["semantic"][:h, :w].numpy()
        for c in range(dataset.meta.num_classes):
            inter[c] += np.sum((pred == c) & (gt == c))
            union[c] += np.sum(((pred == c) | (gt == c)) & (gt != 255))
    assert report["metrics"]["mIoU"] == pytest.approx(float(np.mean(inter[union > 0] / union[union > 0])), abs=1e-9)


def test_predict_hatches_the_tokens_an_auxiliary_decoder_labelled(runs):
    from adaseg.predict.pictures import aux_hatch, compute_panel

    seg, _ = runs
    predictor = adaseg.Predictor(str(seg.root), gate="none", pause="2:0.5", pause_output="aux")
    p = predictor.predict_dataset(predictor.dataset("val"), [0])[0]
    assert p.early_exit
    hatched = np.asarray(compute_panel(p, 0, scale=1)).max(-1) == 0
    plain = np.asarray(compute_panel(type(p)(**{**p.__dict__, "early_exit": False}), 0, scale=1))
    lines = plain.min(-1) == 255  # the white grid lines between tokens are drawn over everything
    # the paused cells at the picture's pixels, computed from the token grid by hand
    (th, tw), (h0, w0) = p.token_shapes[0], p.size
    # (scale 1: pixel y of the picture is y * valid_h / h0 of the model's input, in token y * th / input_h)
    rows = np.minimum((np.arange(h0) * p.valid_size[0] / h0 * th / p.input_size[0]).astype(int), th - 1)
    cols = np.minimum((np.arange(w0) * p.valid_size[1] / w0 * tw / p.input_size[1]).astype(int), tw - 1)
    paused = p.pause_grids()[0][rows[:, None], cols[None, :]] > 0
    assert paused.any() and (~paused).any()
    assert np.array_equal(hatched, paused & aux_hatch(h0, w0) & ~lines)


def test_api_evaluate_takes_the_option_and_checks_it(runs):
    seg, _ = runs
    with pytest.raises(ValueError, match="needs pause"):
        adaseg.evaluate(seg.root, gate="none", pause_output="aux")
    with pytest.raises(ValueError, match="pause_output must be one of decoder, aux"):
        adaseg.evaluate(seg.root, gate="none", pause="2:0.5", pause_output="early")


@pytest.mark.parametrize("command", [
    ("eval", "--pause", "2:0.5", "--pause-output", "aux"),
    ("sweep", "--pause", "2:0.5", "--pause-output", "aux", "--betas", "none", "--bootstrap", "0"),
])
def test_a_model_without_early_exit_is_refused_in_one_line(runs, command):
    _, m2f = runs
    refused(m2f.root, *command, "--run", m2f.root, "--threads", "1", expect="Mask2Former has no early-exit output")


@pytest.mark.parametrize("command", [("eval", "--pause-output", "aux"),
                                     ("sweep", "--pause-output", "aux", "--betas", "none")])
def test_early_exit_without_pausing_is_refused(runs, command):
    seg, _ = runs
    refused(seg.root, *command, "--run", seg.root, expect="needs --pause")


def test_predict_refuses_and_writes_nothing(runs, tmp_path):
    seg, m2f = runs
    out = tmp_path / "out"
    for run, args, expect in [(m2f, ("--pause", "1:0.5"), "Mask2Former has no early-exit output"),
                              (seg, (), "needs pause")]:
        result = invoke("predict", "--run", run.root, "--out", out, "--limit", "1", "--gate", "none",
                        "--pause-output", "aux", *args)
        assert result.exit_code != 0 and result.output.count("Error:") == 1, result.output
        assert expect in " ".join(result.output.split()), result.output
        assert not out.exists() or not any(Path(out).iterdir())
