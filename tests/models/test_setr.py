"""SETR-PUP with PAUMER (App. J): parameter count against a hand count of the paper's ViT-Ti
adaptation, output shapes, and the PUP decoder against its definition written out with
functional ops. (The adaptive contract -- exits, pausing, assembler -- is covered for every
registered model by tests/models/test_adaptive_contract.py.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import adaseg
from adaseg.models.adaptive.settings import AdaptiveSettings


def _vit_params(d: int, depth: int, patch: int, grid: int) -> int:
    """ViT trunk: patch embedding (conv + bias), class token, positions (1 + grid^2), per block
    two LayerNorms, qkv, proj and the 4d MLP (all with biases), final LayerNorm."""
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d)
    return (3 * patch * patch * d + d) + d + (1 + grid * grid) * d + depth * block + 2 * d


def test_parameter_count_of_the_paper_configuration():
    model = adaseg.create_model("setr_pup_vit_ti")  # ViT-Ti/16 at 512, 150 classes
    d, k, c = 192, 150, 192
    encoder = _vit_params(d, 12, 16, 512 // 16)
    aux = 11 * (d * k + k)  # a 1x1 auxiliary decoder after layers 1..11
    # PUP as PAUMER adapts it: the head's LayerNorm, 2 x (3x3 conv without bias + BatchNorm), 1x1 classifier
    decoder = 2 * d + (9 * d * c + 2 * c) + (9 * c * c + 2 * c) + (c * k + k)
    assert sum(p.numel() for p in model.encoder.parameters()) == encoder
    assert sum(p.numel() for p in model.aux_decoders.parameters()) == aux
    assert sum(p.numel() for p in model.decoder.parameters()) == decoder
    assert sum(p.numel() for p in model.parameters()) == encoder + aux + decoder
    assert len(model.decoder.stages) == 2 and model.decoder.scale == 16


@pytest.mark.parametrize("name,size,classes", [("setr_pup_vit_ti", (48, 80), 150), ("setr_tiny", (60, 44), 8)])
@torch.no_grad()
def test_shapes(name, size, classes):
    model = adaseg.create_model(name).eval()
    images = torch.randn(2, 3, *size)
    out = model(images, None, AdaptiveSettings(pause="3:0.4"))
    assert out.heads["sem_logits"].shape == (2, classes, *size)
    p = model.patch_size
    grid = (-(-size[0] // p), -(-size[1] // p))
    assert out.token_shapes.tolist() == [list(grid)]
    tokens = torch.randn(2, grid[0] * grid[1], model.encoder.embed_dim)
    assert model.decoder(tokens, grid).shape == (2, classes, grid[0] * model.decoder.scale,
                                                 grid[1] * model.decoder.scale)
    assert [len(model.postprocess(out, [size, size])), model.postprocess(out, [size, size])[0].shape] == [2, size]


@torch.no_grad()
def test_pup_decoder_is_norm_then_conv_bn_relu_upsample_stages_then_a_1x1_classifier():
    torch.manual_seed(0)
    dec = adaseg.create_model("setr_tiny", num_classes=5).decoder.eval()
    for stage in dec.stages:  # non-trivial running statistics
        stage[1].running_mean.normal_()
        stage[1].running_var.uniform_(0.5, 2.0)
    grid = (3, 4)
    tokens = torch.randn(2, 12, 128)
    x = F.layer_norm(tokens, (128,), dec.norm.weight, dec.norm.bias, eps=1e-6)
    x = x.permute(0, 2, 1).reshape(2, 128, *grid)
    for stage in dec.stages:
        conv, bn = stage[0], stage[1]
        x = F.conv2d(x, conv.weight, None, padding=1)
        x = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
        x = x * bn.weight[:, None, None] + bn.bias[:, None, None]
        x = F.interpolate(x.clamp_min(0), scale_factor=2, mode="bilinear", align_corners=False)
    want = F.conv2d(x, dec.cls_seg.weight, dec.cls_seg.bias)
    torch.testing.assert_close(dec(tokens, grid), want, rtol=1e-5, atol=1e-5)
