"""Shared helpers for the Mask2Former tests: a local patchify backbone and tiny models.

The stem uses non-overlapping strided convolutions, so each output depends only on the input
pixels under it: a padded image (sizes divisible by 32) gets at its valid pixels exactly the
features it gets alone, which isolates the padding behaviour of the pixel decoder and decoder.
"""

from __future__ import annotations

import torch
from torch import nn

from adaseg.models.mask2former import Mask2Former


class PatchStem(nn.Module):
    """(B, 3, H, W) -> {"s4": stride 4, "s3": 8, "s2": 16, "s1": 32}."""

    def __init__(self, widths=(16, 24, 32, 48)):
        super().__init__()
        c4, c3, c2, c1 = widths
        self.channels = {"s4": c4, "s3": c3, "s2": c2, "s1": c1}
        self.p4 = nn.Conv2d(3, c4, 4, stride=4)
        self.p3 = nn.Conv2d(c4, c3, 2, stride=2)
        self.p2 = nn.Conv2d(c3, c2, 2, stride=2)
        self.p1 = nn.Conv2d(c2, c1, 2, stride=2)

    def forward(self, x):
        s4 = torch.relu(self.p4(x))
        s3 = torch.relu(self.p3(s4))
        s2 = torch.relu(self.p2(s3))
        s1 = torch.relu(self.p1(s2))
        return {"s1": s1, "s2": s2, "s3": s3, "s4": s4}


def tiny_model(seed: int = 0, **kw) -> Mask2Former:
    """A small Mask2Former on the patch stem, in eval mode, deterministic from ``seed``."""
    torch.manual_seed(seed)
    settings = dict(
        num_classes=5,
        thing_ids=(2, 3, 4),
        hidden_dim=32,
        mask_dim=32,
        enc_layers=6,
        enc_heads=4,
        enc_points=4,
        enc_ffn=64,
        dec_layers=3,
        dec_heads=4,
        dec_ffn=64,
        num_queries=10,
        norm_groups=8,
        train_points=256,
    )
    settings.update(kw)
    return Mask2Former(backbone=PatchStem(), **settings).eval()
