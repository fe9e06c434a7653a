"""DETR checkpoints wherever a parent is read: an imported transformers DETR (``adaseg
import-weights --hf``, kind ``detr``) and a DETR parent made by train-parent go through
``eval --parent``, ``sweep --parent``, ``predict --parent``, ``init-run --from`` and
``train-parent --init``; a DETR checkpoint into a Mask2Former (and the reverse) is refused with
one line, nothing written.

The imported model is a tiny random ``DetrForObjectDetection`` with 9 classes, as the
synthetic folder (the HF helper of tests/models/test_detr_hf_parity.py); skipped without
transformers. Oracles: the registered ``detr_r50`` started from an import of transformers'
default (ResNet-50) DETR computes the imported model's logits and boxes exactly; init-run's
parent holds the checkpoint's tensors (same fingerprint).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from recipe_testing import TRAIN_FAST, invoke, invoke_json, snapshot, write_folder

transformers = pytest.importorskip("transformers", reason="transformers (test extra) is not installed")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))
from test_detr_hf_parity import _hf_model  # noqa: E402

_TINY = dict(backbone=dict(embedding_size=8, hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 2, 1], layer_type="basic"),
             d_model=16, encoder_layers=3, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
             encoder_ffn_dim=24, decoder_ffn_dim=24, num_queries=5, labels=9)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("data") / "synth")


@pytest.fixture(scope="module")
def detr(tmp_path_factory):
    root = tmp_path_factory.mktemp("detr")
    _hf_model(_TINY, seed=7).save_pretrained(root / "hf")
    out = root / "detr.safetensors"
    res = invoke("import-weights", "--hf", root / "hf", "--out", out)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def detr_parent(tmp_path_factory, detr, folder):
    """A parent train-parent made from the import (--model hf-detr, 1 iteration of wsd)."""
    run = tmp_path_factory.mktemp("runs") / "trained"
    invoke_json("train-parent", "--model", "hf-detr", "--init", detr, "--data", folder, "--recipe", "wsd",
                "--iters", "1", "--batch-size", "2", "--threads", "1", "--run", run)
    return run / "checkpoints" / "parent.safetensors"


def test_imported_checkpoint_records_what_predict_needs(detr):
    from adaseg.storage.checkpoint import read_checkpoint_meta

    meta = read_checkpoint_meta(detr)
    assert meta.kind == "detr"
    assert meta.extra["categories"] == [{"id": i, "name": f"c{i}", "isthing": True} for i in range(9)]
    assert meta.extra["untrained"] == ["aux_decoders"]
    assert meta.extra["eval_transform"] == {"short": 800, "max_size": 1333}  # transformers' DETR processor


@pytest.mark.parametrize("which", ["imported", "trained"])
def test_eval_sweep_predict_with_parent(which, detr, detr_parent, folder, tmp_path):
    ckpt = detr if which == "imported" else detr_parent
    report = invoke_json("eval", "--parent", ckpt, "--data", folder, "--threads", "1", "--bootstrap", "0")
    assert 0.0 <= report["metrics"]["AP_box"] <= 1.0 and report["info"]["run"] == str(ckpt)
    assert report["info"]["model"] == "hf-detr" and report["info"]["task"] == "detection"
    res = invoke("sweep", "--parent", ckpt, "--data", folder, "--exits", "2,3", "--out", tmp_path / "sw",
                 "--threads", "1", "--bootstrap", "0")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "sw" / "sweeps" / "default" / "sweep.json").is_file()
    res = invoke("predict", "--parent", ckpt, "--data", folder, "--out", tmp_path / "p", "--threads", "1")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p" / "detections.json").is_file()


def test_init_run_then_derive_fit_gate(detr, detr_parent, folder, tmp_path):
    from adaseg.storage.checkpoint import read_checkpoint_meta

    for ckpt, name in ((detr, "hf-detr"), (detr_parent, "hf-detr")):
        run = tmp_path / ckpt.parent.name
        res = invoke("init-run", "--from", ckpt, "--data", folder, "--run", run)
        assert res.exit_code == 0, res.output
        assert json.loads((run / "config.json").read_text())["model"] == name
        assert read_checkpoint_meta(run / "checkpoints" / "parent.safetensors").fingerprint == \
            read_checkpoint_meta(ckpt).fingerprint
    invoke_json("derive", "--run", run, "--threads", "1")
    invoke_json("fit-gate", "--beta", "0.0005", "--run", run, "--epochs", "2")


def test_trained_parent_records_dataset_things_and_untrained_decoders(detr_parent):
    from adaseg.storage.checkpoint import read_checkpoint_meta

    meta = read_checkpoint_meta(detr_parent)
    assert meta.config["model"] == "hf-detr" and meta.config["options"]["model"]["thing_ids"] == [0, 1, 2, 3, 4]
    assert meta.extra["untrained"] == ["aux_decoders"]  # wsd trains no auxiliary decoder
    assert meta.extra["settings"]["weight_decay"] == 1e-4 and meta.extra["settings"]["clip"] == 0.1


def test_other_families_are_refused_with_one_line(detr, folder, tmp_path):
    root = tmp_path / "m2f"
    res = invoke("train-parent", "--model", "m2f_tiny", "--init", detr, "--data", folder, *TRAIN_FAST[:4],
                 "--threads", "1", "--run", root)
    assert res.exit_code != 0
    line = res.output.strip().splitlines()[-1]
    assert line == (f"Error: --init {detr} is a checkpoint for model 'hf-detr', not 'm2f_tiny': a DETR's weights do "
                    "not fit a Mask2Former"), res.output
    assert snapshot(root) == {}
    invoke_json("train-parent", "--data", folder, *TRAIN_FAST, "--recipe", "standard", "--run", root)
    back = tmp_path / "detr_from_m2f"
    res = invoke("train-parent", "--model", "detr_tiny", "--init", root / "checkpoints" / "parent.safetensors",
                 "--data", folder, *TRAIN_FAST[:4], "--run", back)
    assert res.exit_code != 0 and "a Mask2Former's weights do not fit a DETR" in res.output, res.output
    assert snapshot(back) == {}


def test_registered_detr_r50_starts_from_an_imported_resnet50_detr(tmp_path):
    """transformers' default DetrConfig (ResNet-50, d 256, 6 + 6 layers, 100 queries) imported:
    ``detr_r50`` (train-parent --model detr_r50 --init) loads it and computes the same heads."""
    from adaseg.engine.train_parent import check_init
    from adaseg.models.registry import create_model
    from adaseg.runs.parent import load_model_weights, load_parent
    from adaseg.storage.checkpoint import CheckpointError
    from detr_import_testing import write_resnet50_detr

    path = tmp_path / "detr50.safetensors"
    write_resnet50_detr(path, {i: f"c{i}" for i in range(9)})
    check_init(str(path), "detr_r50")
    with pytest.raises(CheckpointError, match="a DETR's weights do not fit a Mask2Former"):
        check_init(str(path), "m2f_r50")
    model = create_model("detr_r50", num_classes=9, thing_ids=(0, 1, 2, 3, 4)).eval()
    load_model_weights(model, path, expect_model="detr_r50")
    imported, _ = load_parent(path)
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = imported(x, None).heads, model(x, None).heads
    torch.testing.assert_close(got["pred_logits"], want["pred_logits"], rtol=0, atol=0)
    torch.testing.assert_close(got["pred_boxes"], want["pred_boxes"], rtol=0, atol=0)
