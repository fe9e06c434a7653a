"""Backbones: shapes/strides, exact timm key lists, parameter counts, strict checkpoint loading.

The expected key lists below are an independent oracle written by hand from timm's sources
(huggingface/pytorch-image-models):
  * timm/models/resnet.py: ``ResNet.__init__`` (stem ``conv1``/``bn1``, ``layer1..4``, ``fc``),
    ``Bottleneck``/``BasicBlock`` (``conv1..3``, ``bn1..3``) and ``downsample_conv``
    (``nn.Sequential(conv, norm)`` -> ``downsample.0`` / ``downsample.1``), used for the first
    block of a stage whenever stride != 1 or channels change.
  * timm/models/swin_transformer.py (current layout): ``PatchEmbed`` (``proj`` + ``norm``),
    ``SwinTransformerStage`` (``downsample`` = ``PatchMerging(norm, reduction[no bias])`` for
    stages 1..3, ``nn.Identity`` for stage 0, then ``blocks``), ``SwinTransformerBlock``
    (``norm1``, ``attn``, ``norm2``, ``mlp.fc1``/``fc2``), ``WindowAttention``
    (``relative_position_bias_table``, ``qkv``, ``proj``; ``relative_position_index`` registered
    with ``persistent=False``), final ``norm``, ``ClassifierHead`` -> ``head.fc``.
  * timm/models/vision_transformer.py: ``cls_token``, ``pos_embed``, ``patch_embed.proj``,
    ``Block`` (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``),
    ``norm``, ``head``.
Parameter totals with the 1000-class head are the published ones (timm model cards / papers):
ResNet-50 25.557M, Swin-T 28.288M, ViT-S/16 22.051M (plus Swin-S 49.606M, Swin-B 87.768M,
ViT-Ti/16 5.717M, ViT-B/16 86.568M).
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from adaseg.models.backbones import (
    CheckpointMismatchError,
    build_backbone,
    list_backbones,
    load_timm_checkpoint,
)
from adaseg.models.backbones.swin import PatchMerging, relative_position_index
from adaseg.models.backbones.vit import resize_pos_embed

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
LIN = ("weight", "bias")


def _resnet50_keys() -> dict[str, tuple]:
    keys = {"conv1.weight": (64, 3, 7, 7)}
    keys.update({f"bn1.{s}": None for s in BN})
    in_ch = 64
    for stage, (n, w) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(n):
            p = f"layer{stage}.{b}"
            keys[f"{p}.conv1.weight"] = (w, in_ch, 1, 1)
            keys[f"{p}.conv2.weight"] = (w, w, 3, 3)
            keys[f"{p}.conv3.weight"] = (4 * w, w, 1, 1)
            for i in (1, 2, 3):
                keys.update({f"{p}.bn{i}.{s}": None for s in BN})
            if b == 0:
                keys[f"{p}.downsample.0.weight"] = (4 * w, in_ch, 1, 1)
                keys.update({f"{p}.downsample.1.{s}": None for s in BN})
            in_ch = 4 * w
    keys["fc.weight"], keys["fc.bias"] = (1000, 2048), (1000,)
    return keys


def _swin_keys(embed: int, depths, heads, window: int = 7) -> dict[str, tuple]:
    keys = {"patch_embed.proj.weight": (embed, 3, 4, 4), "patch_embed.proj.bias": (embed,),
            "patch_embed.norm.weight": (embed,), "patch_embed.norm.bias": (embed,)}
    for i, (depth, h) in enumerate(zip(depths, heads)):
        d = embed * 2 ** i
        if i > 0:
            keys[f"layers.{i}.downsample.norm.weight"] = (2 * d,)
            keys[f"layers.{i}.downsample.norm.bias"] = (2 * d,)
            keys[f"layers.{i}.downsample.reduction.weight"] = (d, 2 * d)
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}"
            keys.update({f"{p}.norm1.{s}": (d,) for s in LIN})
            keys[f"{p}.attn.relative_position_bias_table"] = ((2 * window - 1) ** 2, h)
            keys[f"{p}.attn.qkv.weight"], keys[f"{p}.attn.qkv.bias"] = (3 * d, d), (3 * d,)
            keys[f"{p}.attn.proj.weight"], keys[f"{p}.attn.proj.bias"] = (d, d), (d,)
            keys.update({f"{p}.norm2.{s}": (d,) for s in LIN})
            keys[f"{p}.mlp.fc1.weight"], keys[f"{p}.mlp.fc1.bias"] = (4 * d, d), (4 * d,)
            keys[f"{p}.mlp.fc2.weight"], keys[f"{p}.mlp.fc2.bias"] = (d, 4 * d), (d,)
    top = embed * 8
    keys["norm.weight"], keys["norm.bias"] = (top,), (top,)
    keys["head.fc.weight"], keys["head.fc.bias"] = (1000, top), (1000,)
    return keys


def _vit_keys(dim: int, depth: int = 12, grid: int = 14) -> dict[str, tuple]:
    keys = {"cls_token": (1, 1, dim), "pos_embed": (1, 1 + grid * grid, dim),
            "patch_embed.proj.weight": (dim, 3, 16, 16), "patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        p = f"blocks.{i}"
        keys.update({f"{p}.norm1.{s}": (dim,) for s in LIN})
        keys[f"{p}.attn.qkv.weight"], keys[f"{p}.attn.qkv.bias"] = (3 * dim, dim), (3 * dim,)
        keys[f"{p}.attn.proj.weight"], keys[f"{p}.attn.proj.bias"] = (dim, dim), (dim,)
        keys.update({f"{p}.norm2.{s}": (dim,) for s in LIN})
        keys[f"{p}.mlp.fc1.weight"], keys[f"{p}.mlp.fc1.bias"] = (4 * dim, dim), (4 * dim,)
        keys[f"{p}.mlp.fc2.weight"], keys[f"{p}.mlp.fc2.bias"] = (dim, 4 * dim), (dim,)
    keys["norm.weight"], keys["norm.bias"] = (dim,), (dim,)
    keys["head.weight"], keys["head.bias"] = (1000, dim), (1000,)
    return keys


# name -> (timm key oracle, published parameter count with head in millions, head keys)
PAPER = {
    "resnet50": (_resnet50_keys, 25.557),
    "swin_t": (lambda: _swin_keys(96, (2, 2, 6, 2), (3, 6, 12, 24)), 28.288),
    "swin_s": (lambda: _swin_keys(96, (2, 2, 18, 2), (3, 6, 12, 24)), 49.606),
    "swin_b": (lambda: _swin_keys(128, (2, 2, 18, 2), (4, 8, 16, 32)), 87.768),
    "vit_ti": (lambda: _vit_keys(192), 5.717),
    "vit_s": (lambda: _vit_keys(384), 22.051),
    "vit_b": (lambda: _vit_keys(768), 86.568),
}


def _head_params(keys: dict[str, tuple]) -> int:
    total = 0
    for k, shape in keys.items():
        if k.startswith(("fc.", "head.")):
            total += torch.Size(shape).numel()
    return total


@pytest.mark.parametrize("name", sorted(PAPER))
def test_state_dict_matches_timm_keys_shapes_and_param_count(name):
    oracle_fn, published_m = PAPER[name]
    oracle = oracle_fn()
    with torch.device("meta"):  # names, shapes and counts only: no memory, no init cost
        model = build_backbone(name)
    sd = model.state_dict()
    extra = tuple(model.non_timm_prefixes)
    ours = {k: tuple(v.shape) for k, v in sd.items() if not (extra and k.startswith(extra))}
    head = {k for k in oracle if k.startswith(tuple(model.timm_head_prefixes))}
    assert head, "the oracle lists the timm classifier keys"
    assert set(ours) == set(oracle) - head
    for k, shape in oracle.items():
        if shape is not None and k not in head:
            assert ours[k] == shape, k
    # Non-persistent as in timm: derived index buffers never reach the state dict.
    assert not any(k.endswith(("relative_position_index", "attn_mask")) for k in sd)
    n_params = sum(p.numel() for n, p in model.named_parameters() if not (extra and n.startswith(extra)))
    assert abs((n_params + _head_params(oracle)) / 1e6 - published_m) < 5e-4


@pytest.mark.parametrize("name,size", [
    ("resnet_tiny", (64, 64)), ("resnet_tiny", (72, 40)), ("swin_tiny_cpu", (64, 64)), ("swin_tiny_cpu", (72, 40)),
    ("resnet50", (72, 40)), ("swin_t", (72, 40)),
])
def test_pyramid_shapes_and_strides(name, size):
    model = build_backbone(name).eval()
    h, w = size
    with torch.no_grad():
        feats = model(torch.randn(2, 3, h, w))
    assert set(feats) == {"s1", "s2", "s3", "s4"} == set(model.channels)
    for key, stride in (("s1", 32), ("s2", 16), ("s3", 8), ("s4", 4)):
        assert model.strides[key] == stride
        f = feats[key]
        assert f.shape == (2, model.channels[key], -(-h // stride), -(-w // stride)), key
        assert torch.isfinite(f).all()


@pytest.mark.parametrize("name,grid", [("vit_tiny_cpu", (16, 16)), ("vit_ti", (4, 4))])
def test_vit_tokens_shape(name, grid):
    model = build_backbone(name).eval()
    size = (grid[0] * model.patch_size, grid[1] * model.patch_size)
    with torch.no_grad():
        tok = model(torch.randn(2, 3, *size))
        odd = model(torch.randn(1, 3, size[0] - 3, size[1] + 5))  # padded up to whole patches
    assert tok.shape == (2, 1 + grid[0] * grid[1], model.embed_dim)
    assert odd.shape == (1, 1 + grid[0] * (grid[1] + 1), model.embed_dim)


@pytest.mark.parametrize("name", ["resnet_tiny", "swin_tiny_cpu", "vit_tiny_cpu"])
def test_backward_reaches_every_parameter(name):
    model = build_backbone(name).train()
    out = model(torch.randn(2, 3, 64, 64))
    loss = sum(v.float().square().mean() for v in out.values()) if isinstance(out, dict) else out.square().mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad


def _timm_style_checkpoint(model: nn.Module) -> dict[str, torch.Tensor]:
    """What timm would save: the trunk plus a classifier head, without non-timm keys."""
    extra = tuple(model.non_timm_prefixes)
    sd = {k: v.clone() for k, v in model.state_dict().items() if not (extra and k.startswith(extra))}
    head_prefix = {"resnet": "fc.", "swin": "head.fc.", "vision": "head."}
    cls = type(model).__name__.lower()
    prefix = next(v for k, v in head_prefix.items() if cls.startswith(k))
    sd[prefix + "weight"] = torch.randn(10, 4)
    sd[prefix + "bias"] = torch.randn(10)
    return sd


def _randomise(model: nn.Module) -> None:
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t) * 0.1 + (1.0 if t.ndim == 1 else 0.0))


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
@pytest.mark.parametrize("name", ["resnet_tiny", "swin_tiny_cpu", "vit_tiny_cpu"])
def test_round_trip_strict_load(tmp_path, name, fmt):
    torch.manual_seed(0)
    src = build_backbone(name).eval()
    _randomise(src)
    sd = _timm_style_checkpoint(src)
    path = tmp_path / f"ckpt.{fmt}"
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save({"model": sd}, path)  # training-checkpoint wrapper is unwrapped
    dst = build_backbone(name).eval()
    report = load_timm_checkpoint(dst, path)
    assert any(k.startswith(("fc.", "head.")) for k in report["dropped"])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = src(x), dst(x)
    if isinstance(a, dict):
        # Swin's out_norms are not timm keys: they keep their init, so only s1 must agree.
        keys = ["s1"] if name.startswith("swin") else list(a)
        for k in keys:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
        assert report["initialised"] == (sorted(k for k in dst.state_dict() if k.startswith("out_norms."))
                                         if name.startswith("swin") else [])
    else:
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_swin_original_layout_checkpoint_loads(tmp_path):
    """Microsoft/old-timm layout: merge at the end of stage i, stored index/mask buffers, head.*."""
    torch.manual_seed(0)
    src = build_backbone("swin_tiny_cpu", out_norms=False).eval()
    _randomise(src)
    old = {}
    for k, v in src.state_dict().items():
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
        old[f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}" if m else k] = v
    old["layers.0.blocks.0.attn.relative_position_index"] = relative_position_index(4)
    old["layers.0.blocks.1.attn_mask"] = torch.zeros(4, 16, 16)
    old["head.weight"], old["head.bias"] = torch.randn(5, 256), torch.randn(5)
    path = tmp_path / "swin_old.pth"
    torch.save({"model": old}, path)
    dst = build_backbone("swin_tiny_cpu", out_norms=False).eval()
    report = load_timm_checkpoint(dst, path)
    assert "layers.0.blocks.0.attn.relative_position_index" in report["dropped"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for k, v in src(x).items():
            torch.testing.assert_close(v, dst(x)[k], rtol=0, atol=0)


def test_wrong_checkpoint_fails_with_clear_message(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "resnet.safetensors"
    save_file(_timm_style_checkpoint(build_backbone("resnet_tiny")), str(path))
    with pytest.raises(CheckpointMismatchError) as err:
        load_timm_checkpoint(build_backbone("swin_tiny_cpu"), path)
    msg = str(err.value)
    assert str(path) in msg and "SwinTransformer" in msg
    assert "missing keys: patch_embed.proj.weight" in msg and "more)" in msg
    assert "unexpected keys: bn1.bias, bn1.num_batches_tracked" in msg


def test_shape_mismatch_is_reported(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(_timm_style_checkpoint(build_backbone("vit_tiny_cpu", embed_dim=96, num_heads=3)), path)
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatches: cls_token: checkpoint \(1, 1, 96\) vs model \(1, 1, 128\)"):
        load_timm_checkpoint(build_backbone("vit_tiny_cpu"), path)


@pytest.mark.parametrize("name,payload", [("bad.pth", b"\x80\x04garbage"), ("bad.pt", b"PK\x03\x04garbage"),
                                          ("bad.safetensors", b"\xff" * 64)])
def test_corrupt_file_fails_with_one_line_naming_it(tmp_path, name, payload):
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(CheckpointMismatchError) as err:
        load_timm_checkpoint(build_backbone("resnet_tiny"), path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_timm_checkpoint(build_backbone("resnet_tiny"), tmp_path / "nope.safetensors")


def test_vit_pos_embed_resampled_from_other_resolution(tmp_path):
    src = build_backbone("vit_tiny_cpu", img_size=64)  # grid 8x8
    sd = _timm_style_checkpoint(src)
    sd["pos_embed"] = torch.cat([torch.full((1, 1, 128), 3.0), torch.full((1, 64, 128), 0.5)], dim=1)
    path = tmp_path / "vit.pth"
    torch.save(sd, path)
    dst = build_backbone("vit_tiny_cpu")  # grid 16x16
    load_timm_checkpoint(dst, path)
    # A constant grid stays constant under bilinear resampling; the class position is untouched.
    assert dst.pos_embed.shape == (1, 257, 128)
    torch.testing.assert_close(dst.pos_embed[0, 0], torch.full((128,), 3.0))
    torch.testing.assert_close(dst.pos_embed[0, 1:], torch.full((256, 128), 0.5))


def test_resize_pos_embed_hand_case():
    # 1x2 grid [0, 1] -> 1x4 with align_corners=False samples at x = -0.25, 0.25, 0.75, 1.25
    # (clamped at the borders): 0, 0.25, 0.75, 1.
    pos = torch.tensor([[[9.0], [0.0], [1.0]]])
    out = resize_pos_embed(pos, (1, 2), (1, 4))
    torch.testing.assert_close(out[0, :, 0], torch.tensor([9.0, 0.0, 0.25, 0.75, 1.0]))


def test_relative_position_index_hand_case():
    # window 2, tokens (0,0),(0,1),(1,0),(1,1): index = (dy + 1) * 3 + (dx + 1).
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    assert torch.equal(relative_position_index(2), expected)


def test_patch_merging_concat_order():
    # The original Swin order x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2].
    m = PatchMerging(dim=1)
    m.norm, m.reduction = nn.Identity(), nn.Identity()
    x = torch.arange(16.0).view(1, 4, 4, 1)
    out = m(x)
    expected = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
    assert torch.equal(out, expected)


def test_swin_shifted_window_attention_matches_naive_masked_attention():
    """A shifted block equals attention restricted to each token's (rolled) window: checked
    against a dense per-image attention with an explicit same-window mask, no partitioning."""
    torch.manual_seed(0)
    from adaseg.models.backbones.swin import SwinBlock

    blk = SwinBlock(dim=8, num_heads=2, window=4, shift=2, mlp_ratio=2.0, drop_path=0.0).eval()
    batch = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        got = blk._attention(batch)
    for i in range(2):
        _check_one_shifted_image(blk, batch[i : i + 1], got[i : i + 1])


def _check_one_shifted_image(blk, x, got):
    with torch.no_grad():
        # Dense oracle: roll, then token a attends to b iff same window and same pre-roll region.
        xs = torch.roll(x, shifts=(-2, -2), dims=(1, 2)).reshape(64, 8)
        ys, xs_ = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
        ys, xs_ = ys.flatten(), xs_.flatten()
        win = (ys // 4) * 2 + (xs_ // 4)
        region = torch.bucketize(ys, torch.tensor([4, 6]), right=True) * 3 + torch.bucketize(xs_, torch.tensor([4, 6]), right=True)
        allowed = (win[:, None] == win[None, :]) & (region[:, None] == region[None, :])
        qkv = blk.attn.qkv(xs).view(64, 3, 2, 4).permute(1, 2, 0, 3)
        q, k, v = qkv[0], qkv[1], qkv[2]
        logits = q @ k.transpose(-1, -2) / 2.0
        table = blk.attn.relative_position_bias_table
        dy = (ys[:, None] - ys[None, :]) % 8
        dy = torch.where(dy > 4, dy - 8, dy)
        dx = (xs_[:, None] - xs_[None, :]) % 8
        dx = torch.where(dx > 4, dx - 8, dx)
        ly, lx = ys % 4, xs_ % 4
        idx = (ly[:, None] - ly[None, :] + 3) * 7 + (lx[:, None] - lx[None, :] + 3)
        logits = logits + table[idx].permute(2, 0, 1)
        logits = logits.masked_fill(~allowed, float("-inf"))
        out = (logits.softmax(-1) @ v).permute(1, 0, 2).reshape(64, 8)
        out = blk.attn.proj(out).view(1, 8, 8, 8)
        want = torch.roll(out, shifts=(2, 2), dims=(1, 2))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_frozen_bn_keeps_statistics():
    model = build_backbone("resnet_tiny", frozen_bn=True).train()
    before = model.bn1.running_mean.clone()
    model(torch.randn(2, 3, 32, 32) * 5 + 3)
    assert torch.equal(model.bn1.running_mean, before)
    assert not model.bn1.weight.requires_grad


def test_builder_rejects_unknown_name():
    assert "swin_t" in list_backbones()
    with pytest.raises(ValueError, match="unknown backbone 'swin_x'"):
        build_backbone("swin_x")
