"""FLOP counting against hand counts: Linear, conv, a tiny MSDeformAttn on both backends,
scopes (the encoder split), and per-image data-dependent statistics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adaseg.eval.flops import FlopCounter, count_flops, extension_loaded, per_image_flops
from adaseg.nn.ms_deform_attn import MSDeformAttn


@pytest.mark.parametrize("batch, cin, cout", [(3, 8, 4), (1, 5, 7)])
def test_linear(batch, cin, cout):
    c = count_flops(nn.Linear(cin, cout), torch.randn(batch, cin))
    assert c.total == 2 * batch * cin * cout
    assert c.gmacs == pytest.approx(batch * cin * cout / 1e9)


@pytest.mark.parametrize("stride, out_hw", [(1, (6, 7)), (2, (3, 4))])
def test_conv(stride, out_hw):
    conv = nn.Conv2d(3, 5, 3, padding=1, stride=stride)
    c = count_flops(conv, torch.randn(2, 3, 6, 7))
    ho, wo = out_hw
    assert c.total == 2 * 2 * 5 * ho * wo * 3 * 3 * 3  # 2 * N*Cout*Ho*Wo * Cin*kh*kw


def _msda_inputs(n=2, lq=5, c=16, shapes=((4, 4), (2, 3))):
    spatial = torch.tensor(shapes)
    sizes = [h * w for h, w in shapes]
    start = torch.tensor([0, sizes[0]])
    s = sum(sizes)
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n, lq, c, generator=g), torch.rand(n, lq, len(shapes), 2, generator=g),
            torch.randn(n, s, c, generator=g), spatial, start), s


def _msda_hand(n, lq, s, c, m, levels, p):
    d = c // m
    macs = (
        n * s * c * c                      # value_proj
        + n * lq * c * (m * levels * p * 2)  # sampling_offsets
        + n * lq * c * (m * levels * p)      # attention_weights
        + n * lq * m * levels * p * d * (4 + 1)  # bilinear (4) + weighting (1) per channel
        + n * lq * c * c                   # output_proj
    )
    return 2 * macs


@pytest.mark.parametrize("backend", ["reference", "ext"])
def test_ms_deform_attn_module_by_hand(monkeypatch, backend):
    if backend == "ext" and not extension_loaded():
        pytest.skip("the adaseg._C extension is not built")
    monkeypatch.setenv("ADASEG_MSDA_BACKEND", backend)
    m, levels, p = 2, 2, 3
    attn = MSDeformAttn(d_model=16, n_levels=levels, n_heads=m, n_points=p)
    args, s = _msda_inputs()
    counter = FlopCounter(scopes={"attn": attn, "value_proj": attn.value_proj})
    _, c = counter.count(attn, *args)
    assert c.total == _msda_hand(2, 5, s, 16, m, levels, p)
    assert c.scopes["attn"] == c.total and c.scopes["value_proj"] == 2 * 2 * s * 16 * 16
    sampling_op = "adaseg.ms_deform_attn" if backend == "ext" else "aten.grid_sampler_2d"
    assert c.by_op[sampling_op] == 2 * 2 * 5 * m * levels * p * (16 // m) * 5


@pytest.mark.parametrize("mode, macs", [("bilinear", 4), ("nearest", 0), ("bicubic", 16)])
def test_grid_sample_modes(mode, macs):
    x, grid = torch.randn(2, 3, 5, 6), torch.rand(2, 4, 7, 2) * 2 - 1
    c = count_flops(F.grid_sample, x, grid, mode=mode, align_corners=False)
    assert c.total == 2 * 2 * 3 * 4 * 7 * (macs + 1)


class _Toy(nn.Module):
    """stem Linear -> `exit` encoder layers (one module called in a loop) -> head Linear."""

    def __init__(self, c=6):
        super().__init__()
        self.stem = nn.Linear(4, c)
        self.encoder = nn.ModuleList([nn.Linear(c, c) for _ in range(4)])
        self.head = nn.Linear(c, 2)

    def forward(self, x, exit_layer):
        x = self.stem(x)
        for layer in self.encoder[:exit_layer]:
            x = layer(x)
        return self.head(x)


def test_scopes_split_encoder_and_total():
    toy = _Toy()
    counter = FlopCounter(scopes={"encoder": list(toy.encoder), "head": toy.head})
    _, c = counter.count(toy, torch.randn(3, 4), 2)
    assert c.scopes["encoder"] == 2 * (2 * 3 * 6 * 6)
    assert c.scopes["head"] == 2 * 3 * 6 * 2
    assert c.total == 2 * 3 * 4 * 6 + c.scopes["encoder"] + c.scopes["head"]


def test_nested_scope_members_are_counted_once():
    outer = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    c = count_flops(outer, torch.randn(1, 3), scopes={"all": [outer, outer[0], outer[1]]})
    assert c.scopes["all"] == c.total == 2 * 2 * 9


def test_hooks_are_removed_after_counting():
    toy = _Toy()
    count_flops(toy, torch.randn(1, 4), 1, scopes={"encoder": toy.encoder[0]})
    assert not toy.encoder[0]._forward_hooks and not toy.encoder[0]._forward_pre_hooks


def test_per_image_data_dependent_stats():
    toy = _Toy()
    exits = [1, 4, 2, 2, 3]
    images = torch.randn(len(exits), 1, 4)
    stats = per_image_flops(lambda i: toy(images[i], exits[i]), len(exits), scopes={"encoder": toy.encoder})
    fixed = 2 * (4 * 6 + 6 * 2)
    per_layer = 2 * 6 * 6
    expected_enc = torch.tensor([e * per_layer for e in exits], dtype=torch.float64)
    assert stats.values("encoder").tolist() == expected_enc.tolist()
    assert stats.values().tolist() == (expected_enc + fixed).tolist()
    mean, std = stats.mean_std("encoder", unit=1.0)
    assert mean == pytest.approx(float(expected_enc.mean()))
    assert std == pytest.approx(math.sqrt(float(((expected_enc - expected_enc.mean()) ** 2).mean())))
    summary = stats.summary()
    assert summary["images"] == 5
    assert summary["gflops"]["encoder"]["mean"] == pytest.approx(mean / 1e9)
    assert summary["gmacs"]["total"]["mean"] == pytest.approx(float((expected_enc + fixed).mean()) / 2e9)


def test_no_images():
    stats = per_image_flops(lambda i: None, 0)
    assert all(math.isnan(v) for v in stats.mean_std())


def test_mask2former_exits_pausing_and_gate(monkeypatch):
    """On the CPU-sized Mask2Former: encoder FLOPs grow by the same amount per layer, the rest
    does not depend on the exit, pausing lowers the encoder's count, and the gate adds its
    linear layer (2*C*E FLOPs) to the total."""
    from adaseg.models.adaptive.plan import PausePlan
    from adaseg.models.adaptive.settings import AdaptiveSettings
    from adaseg.models.adaptive.gate import Gate
    from adaseg.models.registry import create_model

    monkeypatch.setenv("ADASEG_MSDA_BACKEND", "reference")
    torch.manual_seed(0)
    model = create_model("m2f_tiny").eval()
    x = torch.randn(1, 3, 64, 64)
    counter = FlopCounter(model=model, scopes={"encoder": model.pixel_decoder.transformer})
    counts = {k: counter.count(model, x, None, AdaptiveSettings(exits=k))[1] for k in (2, 4, 6)}
    per_layer = (counts[4].scopes["encoder"] - counts[2].scopes["encoder"]) / 2
    assert per_layer > 0
    assert counts[6].scopes["encoder"] - counts[4].scopes["encoder"] == 2 * per_layer
    assert counts[2].scopes["encoder"] == 2 * per_layer
    rest = {k: c.total - c.scopes["encoder"] for k, c in counts.items()}
    assert rest[2] == rest[4] == rest[6]

    _, paused = counter.count(model, x, None, AdaptiveSettings(exits=6, pause=PausePlan.parse("3:0.4,5:0.3")))
    assert paused.scopes["encoder"] < counts[6].scopes["encoder"]
    assert paused.total - paused.scopes["encoder"] == rest[6]

    gate = Gate(in_channels=model.pixel_decoder.conv_dim, exits=(2, 3, 4, 5, 6))
    with torch.no_grad():  # make the gate pick exit 4 whatever the image
        gate.linear.weight.zero_()
        gate.linear.bias.copy_(torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]))
    model.set_gate(gate)
    _, gated = counter.count(model, x, None, AdaptiveSettings(exits="gate"))
    assert gated.scopes["encoder"] == counts[4].scopes["encoder"]
    assert gated.total == counts[4].total + 2 * model.pixel_decoder.conv_dim * 5
    assert all(p.requires_grad for p in model.parameters())  # restored after counting


@pytest.mark.parametrize("q_len,kv_len,ev", [(7, 7, 8), (5, 9, 6)])
def test_cpu_scaled_dot_product_attention_by_hand(q_len, kv_len, ev):
    # Two matmuls: (L x E)(E x S) and (L x S)(S x Ev) per batch and head, 2 FLOPs per MAC.
    b, h, e = 2, 3, 8
    q, k, v = torch.randn(b, h, q_len, e), torch.randn(b, h, kv_len, e), torch.randn(b, h, kv_len, ev)
    flops = count_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    assert flops.total == 2 * b * h * q_len * kv_len * e + 2 * b * h * q_len * kv_len * ev
