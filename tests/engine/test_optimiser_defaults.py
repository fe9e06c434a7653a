"""train-parent's optimiser defaults follow the model family: DETR's (AdamW lr 1e-4, backbone
lr 1e-5, weight decay 1e-4, gradient clip 0.1: Carion et al. 2020, Sec. 4, and DETR's main.py)
for DETR models, Mask2Former's (weight decay 0.05, clip 0.01) otherwise; flags the user gives
win; the resolved values are what config.json records and the AdamW groups hold. The expected
numbers are written out by hand from the papers, not read from the code's table."""

from __future__ import annotations

import json

import pytest
from recipe_testing import invoke, write_folder

from adaseg.engine.train_parent import TrainSettings, build_optimizer

DETR = {"lr": 1e-4, "backbone_lr_mult": 0.1, "weight_decay": 1e-4, "clip": 0.1}
M2F = {"lr": 1e-4, "backbone_lr_mult": 0.1, "weight_decay": 0.05, "clip": 0.01}
KEYS = tuple(DETR)


@pytest.mark.parametrize("model, want", [("detr_tiny", DETR), ("detr_r50", DETR), ("hf-detr", DETR),
                                         ("m2f_tiny", M2F), ("hf-mask2former", M2F), ("segmenter_tiny", M2F)])
def test_defaults_by_family(model, want):
    s = TrainSettings(model=model)
    assert {k: getattr(s, k) for k in KEYS} == want


def test_given_values_win_and_survive_json():
    s = TrainSettings(model="detr_tiny", weight_decay=0.05, clip=0.01, lr=2e-4)
    assert (s.lr, s.backbone_lr_mult, s.weight_decay, s.clip) == (2e-4, 0.1, 0.05, 0.01)
    back = TrainSettings.from_json(s.to_json())  # a stored run keeps what it ran with
    assert (back.lr, back.weight_decay, back.clip) == (2e-4, 0.05, 0.01)


def test_detr_optimizer_groups():
    from adaseg.models.registry import create_model

    model = create_model("detr_tiny")
    opt = build_optimizer(model, TrainSettings(model="detr_tiny"))
    backbone = {id(p) for p in model.backbone.parameters()}
    for g in opt.param_groups:
        in_backbone = {id(p) in backbone for p in g["params"]}
        assert len(in_backbone) == 1
        assert g["lr"] == pytest.approx(1e-5 if in_backbone.pop() else 1e-4)
        assert g["weight_decay"] in (0.0, 1e-4)
    assert any(g["weight_decay"] == 1e-4 for g in opt.param_groups)


def test_cli_records_resolved_settings_and_flags_win(tmp_path):
    folder = write_folder(tmp_path / "synth")
    common = ["--data", folder, "--iters", "1", "--batch-size", "1", "--init", "none", "--recipe", "standard",
              "--threads", "1"]
    res = invoke("train-parent", "--model", "detr_tiny", *common, "--run", tmp_path / "a")
    assert res.exit_code == 0, res.output
    train = json.loads((tmp_path / "a" / "config.json").read_text())["train"]
    assert {k: train[k] for k in KEYS} == DETR
    assert "weight decay 0.0001 clip 0.1" in res.output  # the start line shows them
    res = invoke("train-parent", "--model", "detr_tiny", *common, "--weight-decay", "0.05", "--clip", "0.01",
                 "--run", tmp_path / "b")
    assert res.exit_code == 0, res.output
    train = json.loads((tmp_path / "b" / "config.json").read_text())["train"]
    assert {k: train[k] for k in KEYS} == {**DETR, "weight_decay": 0.05, "clip": 0.01}
