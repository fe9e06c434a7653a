"""SETR's progressive-upsampling (PUP) decoder (Zheng et al., CVPR 2021, Sec. 3.3).

The encoder's patch tokens are laid back on their (h, w) grid (after a LayerNorm of the
head's own, as the reference head does) and refined by ``num_convs`` stages, each a 3x3
convolution (no bias: a BatchNorm follows), BatchNorm, ReLU and a bilinear upsampling by
``up_scale``; a 1x1 convolution then gives the class logits. SETR-PUP on ViT-L: 4 stages of
x2 (256 channels); PAUMER's ViT-Ti adaptation (App. J): 2 stages of x4, 192 channels -- both
reach the patch size 16 from the token grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PUPDecoder"]


class PUPDecoder(nn.Module):
    """Progressive upsampling head.

    Args:
        in_dim: encoder token width D.
        channels: width of every convolution stage.
        num_classes: K semantic classes.
        num_convs: 3x3 conv + BN + ReLU + upsampling stages.
        up_scale: upsampling factor of each stage.
    """

    def __init__(self, *, in_dim: int, channels: int, num_classes: int, num_convs: int, up_scale: int) -> None:
        super().__init__()
        if num_convs < 1 or up_scale < 1:
            raise ValueError(f"num_convs and up_scale must be positive, got {num_convs} and {up_scale}")
        self.up_scale = up_scale
        self.norm = nn.LayerNorm(in_dim, eps=1e-6)
        stages = []
        for i in range(num_convs):
            stages.append(nn.Sequential(
                nn.Conv2d(in_dim if i == 0 else channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ))
        self.stages = nn.ModuleList(stages)
        self.cls_seg = nn.Conv2d(channels, num_classes, 1)

    @property
    def scale(self) -> int:
        """Total upsampling from the token grid: ``up_scale ** num_convs``."""
        return self.up_scale ** len(self.stages)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, h*w, D) patch tokens (row-major) -> (B, K, h*s, w*s) logits, s = :attr:`scale`."""
        b, n, d = tokens.shape
        if n != grid[0] * grid[1]:
            raise ValueError(f"{n} patch tokens do not form a {grid[0]}x{grid[1]} grid")
        x = self.norm(tokens).transpose(1, 2).reshape(b, d, grid[0], grid[1])
        for stage in self.stages:
            x = F.interpolate(stage(x), scale_factor=self.up_scale, mode="bilinear", align_corners=False)
        return self.cls_seg(x)
