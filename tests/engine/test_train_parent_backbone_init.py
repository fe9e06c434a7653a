"""train-parent from a backbone-only checkpoint (``adaseg import-weights --timm-backbone``):
the parent's backbone is the timm file's weights, the rest keeps its initialisation; a
backbone of another architecture is refused with one line before anything is written."""

from __future__ import annotations

import pytest
import torch
from recipe_testing import invoke, invoke_json, snapshot, write_folder
from safetensors.torch import save_file

from adaseg.models.backbones import build_backbone
from adaseg.runs.parent import load_parent


def _timm_file(path, name: str, seed: int) -> dict[str, torch.Tensor]:
    """A timm-format state dict of backbone ``name`` with random weights, written to ``path``."""
    torch.manual_seed(seed)
    backbone = build_backbone(name)
    with torch.no_grad():
        for p in backbone.parameters():
            p.normal_(0.0, 0.05)
    state = {k: v.contiguous() for k, v in backbone.state_dict().items()}
    save_file(state, str(path))
    return state


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("data") / "synth")


@pytest.mark.parametrize("model,backbone", [("m2f_tiny", "resnet_tiny"), ("segmenter_tiny", "vit_tiny_cpu")])
def test_parent_backbone_is_the_timm_checkpoint(folder, tmp_path, model, backbone):
    timm_state = _timm_file(tmp_path / "timm.safetensors", backbone, seed=3)
    ckpt = tmp_path / "backbone.safetensors"
    done = invoke("import-weights", "--timm-backbone", tmp_path / "timm.safetensors", "--model", backbone,
                  "--out", ckpt)
    assert done.exit_code == 0, done.output
    run = tmp_path / "run"
    # --backbone-lr-mult 0: the one training step leaves the backbone's parameters as loaded
    out = invoke_json("train-parent", "--model", model, "--data", folder, "--init", ckpt, "--iters", "1",
                      "--batch-size", "2", "--backbone-lr-mult", "0", "--threads", "1", "--run", run)
    assert out["init"] == str(ckpt)
    parent, _ = load_parent(run / "checkpoints" / "parent.safetensors")
    params = dict(parent.backbone.named_parameters())
    assert set(params) <= set(timm_state)
    for name, p in params.items():
        assert torch.equal(p, timm_state[name]), name


def test_backbone_of_another_architecture_is_refused(folder, tmp_path):
    _timm_file(tmp_path / "vit.safetensors", "vit_tiny_cpu", seed=0)
    ckpt = tmp_path / "vit_backbone.safetensors"
    assert invoke("import-weights", "--timm-backbone", tmp_path / "vit.safetensors", "--model", "vit_tiny_cpu",
                  "--out", ckpt).exit_code == 0
    run = tmp_path / "run"
    before = snapshot(run)
    result = invoke("train-parent", "--model", "m2f_tiny", "--data", folder, "--init", ckpt, "--iters", "1",
                    "--run", run)
    assert result.exit_code == 1
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "backbone checkpoint" in lines[0] and "vit_tiny_cpu" in lines[0], result.output
    assert snapshot(run) == before

    imported = invoke("train-parent", "--model", "hf-mask2former", "--data", folder, "--init", ckpt, "--iters", "1",
                      "--run", run)
    assert imported.exit_code == 1 and "backbone only" in imported.output
    assert snapshot(run) == before


@pytest.mark.parametrize("model,prefix", [("m2f_tiny", "backbone."), ("segmenter_tiny", "encoder.")])
def test_backbone_lr_multiplier_covers_exactly_the_pretrained_backbone(model, prefix):
    """Mask2Former's optimiser groups: every parameter under the backbone's name prefix (for
    Segmenter the whole ViT, class token and positions included) at lr x 0.1, the rest at lr;
    no weight decay on 1-d parameters (norms, biases) or embeddings."""
    from adaseg.runs.parent import build_model
    from adaseg.engine.train_parent import TrainSettings, build_optimizer

    net = build_model(model, {})
    settings = TrainSettings(model=model, lr=1e-4, backbone_lr_mult=0.1, weight_decay=0.05)
    optimizer = build_optimizer(net, settings)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for name, p in net.named_parameters():
        g = group_of[id(p)]
        assert g["lr"] == pytest.approx(1e-5 if name.startswith(prefix) else 1e-4), name
        decays = p.dim() > 1 and not any(k in name for k in ("level_embed", "query", "pos_embed"))
        assert g["weight_decay"] == (0.05 if decays else 0.0), name
    assert any(n.startswith(prefix + "cls_token") for n, _ in net.named_parameters()) == (model == "segmenter_tiny")
