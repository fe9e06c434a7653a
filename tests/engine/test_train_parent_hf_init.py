"""train-parent from a Hugging Face Mask2Former imported with ``adaseg import-weights --hf``:
the parent is that model (its weights, its depth), and derive / eval rebuild it."""

from __future__ import annotations

import pytest
import torch
from recipe_testing import invoke, invoke_json, write_folder

from adaseg.storage.checkpoint import load_checkpoint
from adaseg.runs.parent import load_parent

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install -e .[test])")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    swin = transformers.SwinConfig(embed_dim=32, depths=[1, 1, 2, 2], num_heads=[1, 2, 4, 8], window_size=7,
                                   out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.Mask2FormerConfig(
        backbone_config=swin, feature_size=64, mask_feature_size=64, hidden_dim=64, encoder_feedforward_dim=128,
        dim_feedforward=128, encoder_layers=3, decoder_layers=2, num_queries=8, num_attention_heads=4,
        id2label={i: f"class{i}" for i in range(9)},  # the synthetic set's 9 classes, 5 things first
    )
    torch.manual_seed(0)
    transformers.Mask2FormerForUniversalSegmentation(config).save_pretrained(root / "hf")
    out = root / "imported.safetensors"
    result = invoke("import-weights", "--hf", root / "hf", "--thing-ids", "0,1,2,3,4", "--out", out)
    assert result.exit_code == 0, result.output
    return out, write_folder(root / "synth")


def test_train_parent_from_an_imported_model(imported, tmp_path):
    ckpt, folder = imported
    wrong = invoke("train-parent", "--data", folder, "--init", ckpt, "--iters", "1", "--run", tmp_path / "x")
    assert wrong.exit_code != 0 and "pass --model hf-mask2former" in wrong.output
    assert not (tmp_path / "x").exists()

    run = tmp_path / "run"
    out = invoke_json("train-parent", "--model", "hf-mask2former", "--data", folder, "--init", ckpt, "--iters", "1",
                      "--batch-size", "2", "--lr", "1e-12", "--run", run)
    assert out["init"] == str(ckpt)
    model, info = load_parent(run / "checkpoints" / "parent.safetensors")
    assert info["model"] == "hf-mask2former" and model.depth == 3 and model.exits == (2, 3)
    start, _ = load_checkpoint(ckpt)
    state = model.state_dict()
    # lr 1e-12: one step leaves the imported weights (to float32 rounding)
    torch.testing.assert_close(state["predictor.query_feat.weight"], start["predictor.query_feat.weight"])
    derived = invoke_json("derive", "--run", run, "--threads", "1")
    assert derived["exits"] == [2, 3] and derived["num_images"] == 8
    report = invoke_json("eval", "--run", run, "--gate", "none", "--timed", "1", "--warmup", "0")
    assert report["exits"]["histogram"] == {"3": 4}
