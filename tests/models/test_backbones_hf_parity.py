"""Numerical parity of the backbones with HuggingFace transformers' implementations.

transformers (a test-only dependency) implements Swin, ViT and ResNet independently of timm
and of adaseg; with the same random weights, renamed, the outputs must agree. This checks the
computation (window partition/shift/padding order, patch-merging channel order, relative
position bias, attention, pre-norm order, the ResNet v1.5 stride placement), which the
key-name tests cannot. The renaming tables cover transformers 5.x names (``q_proj``...) and
4.x names (``attention.self.query``...); only the installed version's path runs here.
"""

from __future__ import annotations

import re

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers (test extra) is not installed")

from adaseg.models.backbones.resnet import ResNet  # noqa: E402
from adaseg.models.backbones.swin import SwinTransformer  # noqa: E402
from adaseg.models.backbones.vit import VisionTransformer  # noqa: E402

ATOL = 2e-5

# transformers 4.x -> 5.x names inside a Swin/ViT layer, applied first so one table follows.
_V4_TO_V5 = [
    ("attention.self.query", "attention.q_proj"),
    ("attention.self.key", "attention.k_proj"),
    ("attention.self.value", "attention.v_proj"),
    ("attention.self.relative_position_bias_table", "attention.relative_position_bias.relative_position_bias_table"),
    ("attention.attention.query", "attention.q_proj"),
    ("attention.attention.key", "attention.k_proj"),
    ("attention.attention.value", "attention.v_proj"),
    ("attention.output.dense", "attention.o_proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
]


def _v5(key: str) -> str:
    for old, new in _V4_TO_V5:
        key = key.replace(old, new)
    return re.sub(r"^encoder\.layer\.", "layers.", key)


def _fuse_qkv(sd: dict[str, torch.Tensor], prefix_out: str) -> dict[str, torch.Tensor]:
    for k in [k for k in sd if ".attention.q_proj." in k]:
        base, kind = k.split(".attention.q_proj.")
        sd[f"{base}.{prefix_out}.qkv.{kind}"] = torch.cat([sd.pop(f"{base}.attention.{n}_proj.{kind}") for n in "qkv"])
    return sd


def _swin_from_hf(hf_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in hf_sd.items():
        k = _v5(k.removeprefix("swin."))
        if k.startswith("layernorm."):
            continue  # SwinModel's final norm; the backbone normalises every stage itself
        m = re.match(r"hidden_states_norms\.stage(\d)\.(\w+)", k)
        if m:
            stage = int(m.group(1))
            out[("norm." if stage == 4 else f"out_norms.s{5 - stage}.") + m.group(2)] = v
            continue
        k = k.replace("embeddings.patch_embeddings.projection", "patch_embed.proj").replace("embeddings.norm", "patch_embed.norm")
        # HF merges at the end of stage i; timm (and adaseg) at the start of stage i + 1.
        k = re.sub(r"encoder\.layers\.(\d+)\.downsample", lambda g: f"layers.{int(g.group(1)) + 1}.downsample", k)
        k = k.replace("encoder.layers.", "layers.").replace("layernorm_before", "norm1").replace("layernorm_after", "norm2")
        k = k.replace("attention.relative_position_bias.relative_position_bias_table", "attn.relative_position_bias_table")
        k = k.replace("attention.o_proj", "attn.proj")
        out[k] = v
    return _fuse_qkv(out, "attn")


def _vit_from_hf(hf_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in hf_sd.items():
        k = _v5(k)
        k = k.replace("embeddings.cls_token", "cls_token").replace("embeddings.position_embeddings", "pos_embed")
        k = k.replace("embeddings.patch_embeddings.projection", "patch_embed.proj")
        k = k.replace("layers.", "blocks.").replace("layernorm_before", "norm1").replace("layernorm_after", "norm2")
        k = k.replace("attention.o_proj", "attn.proj").replace("layernorm.", "norm.")
        out[k] = v
    return _fuse_qkv(out, "attn")


def _resnet_from_hf(hf_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in hf_sd.items():
        k = k.removeprefix("resnet.")
        k = k.replace("embedder.embedder.convolution", "conv1").replace("embedder.embedder.normalization", "bn1")
        k = re.sub(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.", lambda g: f"layer{int(g.group(1)) + 1}.{g.group(2)}.", k)
        k = k.replace("shortcut.convolution", "downsample.0").replace("shortcut.normalization", "downsample.1")
        k = re.sub(r"layer\.(\d)\.convolution", lambda g: f"conv{int(g.group(1)) + 1}", k)
        k = re.sub(r"layer\.(\d)\.normalization", lambda g: f"bn{int(g.group(1)) + 1}", k)
        out[k] = v
    return out


def _perturb(module: torch.nn.Module) -> None:
    # Move every weight off its init (LayerNorm at 1/0, zero biases would hide mistakes).
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * 0.1)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.abs_().add_(0.5)


@pytest.mark.parametrize("size", [(128, 128), (96, 128), (112, 144)])
def test_swin_matches_transformers_swin_backbone(size):
    # Two blocks per stage, so the last stage (4x4 or 3x4/4x5 maps, window 4) has a shifted
    # block on a map no larger than one window: HF's SwinBackbone shifts it anyway
    # (``always_shift=True`` here); timm's rule (the default) does not, checked below.
    cfg = transformers.SwinConfig(image_size=128, patch_size=4, embed_dim=16, depths=[2, 2, 2, 2],
                                  num_heads=[1, 2, 2, 4], window_size=4,
                                  out_features=["stage1", "stage2", "stage3", "stage4"])
    torch.manual_seed(0)
    hf = transformers.SwinBackbone(cfg).eval()
    _perturb(hf)
    sd = _swin_from_hf(hf.state_dict())
    ours = SwinTransformer(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window=4, always_shift=True).eval()
    ours.load_state_dict(sd, strict=True)
    timm_rule = SwinTransformer(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window=4).eval()
    timm_rule.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        want = hf(x).feature_maps
        got = ours(x)
        unshifted = timm_rule(x)
    for key, fm in zip(("s4", "s3", "s2", "s1"), want):
        torch.testing.assert_close(got[key], fm, rtol=0, atol=ATOL)
    # Stages 1-3 have maps larger than the window: both rules shift there and agree.
    for key in ("s4", "s3", "s2"):
        torch.testing.assert_close(unshifted[key], got[key], rtol=0, atol=ATOL)
    assert not torch.allclose(unshifted["s1"], got["s1"], atol=1e-2)


def test_vit_matches_transformers_vit():
    cfg = transformers.ViTConfig(image_size=64, patch_size=16, hidden_size=48, num_hidden_layers=3,
                                 num_attention_heads=3, intermediate_size=192, layer_norm_eps=1e-6)
    torch.manual_seed(0)
    hf = transformers.ViTModel(cfg, add_pooling_layer=False).eval()
    _perturb(hf)
    ours = VisionTransformer(img_size=64, patch_size=16, embed_dim=48, depth=3, num_heads=3).eval()
    ours.load_state_dict(_vit_from_hf(hf.state_dict()), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = hf(pixel_values=x).last_hidden_state
        got = ours(x)
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)


@pytest.mark.parametrize("block,layer_type", [("bottleneck", "bottleneck"), ("basic", "basic")])
def test_resnet_matches_transformers_resnet(block, layer_type):
    expansion = 4 if block == "bottleneck" else 1
    cfg = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16 * expansion, 32 * expansion, 64 * expansion,
                                    128 * expansion], depths=[2, 1, 2, 1], layer_type=layer_type)
    torch.manual_seed(0)
    hf = transformers.ResNetModel(cfg).eval()
    _perturb(hf)
    ours = ResNet(block=block, layers=(2, 1, 2, 1), widths=(16, 32, 64, 128), stem_width=16).eval()
    ours.load_state_dict(_resnet_from_hf(hf.state_dict()), strict=True)
    x = torch.randn(2, 3, 72, 88)
    with torch.no_grad():
        hidden = hf(pixel_values=x, output_hidden_states=True).hidden_states  # embedder, stage 1..4
        got = ours(x)
    for key, fm in zip(("s4", "s3", "s2", "s1"), hidden[1:]):
        torch.testing.assert_close(got[key], fm, rtol=1e-5, atol=1e-4)
