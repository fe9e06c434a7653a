"""The ECO-M2F gate: pooling against a manual mean, exit mapping, batch independence."""

from __future__ import annotations

import pytest
import torch
from m2f_testing import tiny_model

from adaseg.models.adaptive.gate import Gate, check_gate_fits, pool_features


def test_pool_matches_manual_mean_with_and_without_padding():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(pool_features(x), torch.stack([x[i].reshape(3, -1).mean(1) for i in range(2)]))
    mask = torch.zeros(2, 4, 5, dtype=torch.bool)
    mask[1, 2:, :] = True
    mask[1, :, 3:] = True
    expected = torch.stack([x[0].reshape(3, -1).mean(1), x[1, :, :2, :3].reshape(3, -1).mean(1)])
    torch.testing.assert_close(pool_features(x, mask), expected)


@torch.no_grad()
def test_model_gate_features_are_pooled_projected_lowest_level():
    model = tiny_model(seed=0)
    images = torch.randn(2, 3, 64, 64)
    out = model(images)
    s1 = model.backbone(images)["s1"]
    conv, norm = model.pixel_decoder.input_proj[0]
    torch.testing.assert_close(out.gate_features, norm(conv(s1)).mean((2, 3)))


@pytest.mark.parametrize("batch", [1, 3, 8])
@torch.no_grad()
def test_gate_is_per_image(batch):
    torch.manual_seed(1)
    gate = Gate(in_channels=6, exits=(2, 3, 4, 5, 6))
    feats = torch.randn(batch, 6)
    logits = gate(feats)
    assert logits.shape == (batch, 5)
    for i in range(batch):
        torch.testing.assert_close(gate(feats[i : i + 1])[0], logits[i])
    expected = torch.tensor([gate.exits[int(j)] for j in logits.argmax(-1)])
    assert torch.equal(gate.predict(feats), expected)


def test_gate_validation():
    with pytest.raises(ValueError, match="strictly increasing"):
        Gate(in_channels=4, exits=(3, 2))
    with pytest.raises(ValueError, match="strictly increasing"):
        Gate(in_channels=4, exits=())
    gate = Gate(in_channels=4, exits=(2, 6))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        gate(torch.zeros(2, 5))


def test_check_gate_fits():
    gate = Gate(in_channels=4, exits=(2, 6))
    check_gate_fits(gate, depth=6, channels=4)
    with pytest.raises(ValueError, match=r"does not fit this model \(depth 5, 4 channels\)"):
        check_gate_fits(gate, depth=5, channels=4)
    with pytest.raises(ValueError, match=r"does not fit this model \(depth 6, 8 channels\)"):
        check_gate_fits(gate, depth=6, channels=8)


def test_model_gate_channels_are_the_encoder_width():
    model = tiny_model(seed=0)
    assert model.gate_channels == model.pixel_decoder.conv_dim == 32
    model.set_gate(Gate(in_channels=32, exits=(2, 6)))
    assert model.gate is not None
    model.set_gate(None)
