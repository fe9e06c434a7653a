"""adaseg's DETR against transformers' ``DetrForObjectDetection`` (transformers' own ResNet
backbone): two small random configs, every parameter and BatchNorm statistic perturbed (so
no zero or one initialisation can hide a mapping error), saved with ``save_pretrained``,
imported by :func:`adaseg.models.from_hf_detr`; class logits and boxes equal transformers'
to 1e-4, on padded and unpadded images. The second checkpoint is rewritten with transformers
4.x key names as a torch ``.bin`` (the legacy layout on disk)."""

from __future__ import annotations

import json
import re

import pytest
import torch

import adaseg.models
from adaseg.models.hf.config import HFConfigError
from adaseg.models.hf.mapping import HFWeightsError

transformers = pytest.importorskip("transformers", reason="transformers (test extra) is not installed")

_CONFIGS = {
    "bottleneck": dict(backbone=dict(embedding_size=8, hidden_sizes=[16, 32, 32, 64], depths=[1, 2, 1, 1],
                                     layer_type="bottleneck"),
                       d_model=32, encoder_layers=3, decoder_layers=2, encoder_attention_heads=4,
                       decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, num_queries=7, labels=4),
    "basic": dict(backbone=dict(embedding_size=8, hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 2, 1],
                                layer_type="basic"),
                  d_model=16, encoder_layers=2, decoder_layers=3, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, num_queries=5, labels=3),
}


def _hf_model(spec: dict, seed: int):
    bb = transformers.ResNetConfig(out_features=["stage4"], **spec["backbone"])
    cfg = transformers.DetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=bb, d_model=spec["d_model"],
        encoder_layers=spec["encoder_layers"], decoder_layers=spec["decoder_layers"],
        encoder_attention_heads=spec["encoder_attention_heads"], decoder_attention_heads=spec["decoder_attention_heads"],
        encoder_ffn_dim=spec["encoder_ffn_dim"], decoder_ffn_dim=spec["decoder_ffn_dim"],
        num_queries=spec["num_queries"], id2label={i: f"c{i}" for i in range(spec["labels"])},
    )
    torch.manual_seed(seed)
    model = transformers.DetrForObjectDetection(cfg).eval()
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand_like(t) + 0.5)
            else:
                t.add_(torch.randn_like(t) * 0.2)
    return model


def _legacy(key: str) -> str:
    """transformers 5.x key -> the 4.x spelling on disk."""
    key = key.replace("model.backbone.model.", "model.backbone.conv_encoder.model.")
    key = re.sub(r"\.(self_attn|encoder_attn)\.o_proj\.", r".\1.out_proj.", key)
    return re.sub(r"(layers\.\d+)\.mlp\.fc([12])\.", r"\1.fc\2.", key)


@pytest.mark.parametrize("name", sorted(_CONFIGS))
def test_logits_and_boxes_equal_transformers(name, tmp_path):
    hf = _hf_model(_CONFIGS[name], seed=len(name))
    hf.save_pretrained(tmp_path)
    if name == "basic":  # the legacy layout: 4.x names in a torch .bin
        (tmp_path / "model.safetensors").unlink()
        torch.save({_legacy(k): v for k, v in hf.state_dict().items()}, tmp_path / "pytorch_model.bin")
    model, info = adaseg.models.from_hf_detr(tmp_path, return_info=True)
    assert info.class_names == [f"c{i}" for i in range(_CONFIGS[name]["labels"])]
    assert info.initialised and all(k.startswith("encoder.aux_decoders.") for k in info.initialised)
    g = torch.Generator().manual_seed(3)
    images = torch.randn(2, 3, 96, 128, generator=g)
    pixel_mask = torch.ones(2, 96, 128, dtype=torch.long)
    pixel_mask[1, 64:, :] = 0
    pixel_mask[1, :, 96:] = 0
    for mask in (None, pixel_mask):
        with torch.no_grad():
            want = hf(pixel_values=images, pixel_mask=mask)
            got = model(images, None if mask is None else mask == 0).heads
        torch.testing.assert_close(got["pred_logits"], want.logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got["pred_boxes"], want.pred_boxes, rtol=1e-4, atol=1e-4)


def test_unsupported_configs_and_weights_are_refused(tmp_path):
    hf = _hf_model(_CONFIGS["basic"], seed=0)
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    for field, value, match in [("use_timm_backbone", True, "use_timm_backbone"), ("auxiliary_loss", True, "auxiliary"),
                                ("decoder_ffn_dim", 7, "decoder_ffn_dim"), ("model_type", "mask2former", "model_type")]:
        (tmp_path / "config.json").write_text(json.dumps({**cfg, field: value}))
        with pytest.raises(HFConfigError, match=match):
            adaseg.models.from_hf_detr(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    sd = {k: v for k, v in hf.state_dict().items()}
    sd["model.extra.weight"] = torch.zeros(1)
    (tmp_path / "model.safetensors").unlink()
    torch.save(sd, tmp_path / "pytorch_model.bin")
    with pytest.raises(HFWeightsError, match="model.extra.weight"):
        adaseg.models.from_hf_detr(tmp_path)
    sd.pop("model.extra.weight")
    sd.pop("class_labels_classifier.bias")
    torch.save(sd, tmp_path / "pytorch_model.bin")
    with pytest.raises(HFWeightsError, match="class_embed.bias"):
        adaseg.models.from_hf_detr(tmp_path)


def test_import_weights_command_writes_a_detr_checkpoint(tmp_path):
    from click.testing import CliRunner

    from adaseg.cli.main import main as cli
    from adaseg.storage.checkpoint import load_checkpoint

    hf = _hf_model(_CONFIGS["basic"], seed=1)
    hf.save_pretrained(tmp_path / "hf")
    out = tmp_path / "detr.safetensors"
    res = CliRunner().invoke(cli, ["import-weights", "--hf", str(tmp_path / "hf"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "DETR ResNet (basic), 3 classes, 5 queries" in res.output
    state, meta = load_checkpoint(str(out))
    assert meta.kind == "detr" and meta.config["architecture"] == "detr"
    want = adaseg.models.from_hf_detr(tmp_path / "hf").state_dict()
    assert set(state) == set(want) and all(torch.equal(state[k], want[k]) for k in want
                                           if not k.startswith("encoder.aux_decoders."))
    bad = CliRunner().invoke(cli, ["import-weights", "--hf", str(tmp_path / "hf"), "--thing-ids", "0",
                                   "--out", str(tmp_path / "x.safetensors")])
    assert bad.exit_code != 0 and "--thing-ids" in bad.output and not (tmp_path / "x.safetensors").exists()
