"""Padding-aware building blocks: GroupNorm over valid pixels, conv+norm, edge replication.

Mask2Former pads a batch to a common size; a GroupNorm over the padded map, a 3x3 conv
reading padded neighbours, or a bilinear upsample blending in padded pixels would make an
image's result depend on its batch-mates. These blocks make the pixel decoder give a padded
image exactly what it gives alone (for sizes divisible by the coarsest stride).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskedGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters) whose statistics skip padded pixels.

    forward(x (B, C, H, W), mask (B, H, W) bool True on padding | None) -> (B, C, H, W).
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if mask is None:
            return super().forward(x)
        b, c, h, w = x.shape
        g = self.num_groups
        # statistics in float32 (float64 stays float64), as autocast runs group_norm
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        valid = (~mask).to(acc).view(b, 1, 1, h * w)
        xg = x.to(acc).reshape(b, g, c // g, h * w)
        count = valid.sum(-1, keepdim=True).clamp(min=1) * (c // g)
        mean = (xg * valid).sum((-1, -2), keepdim=True) / count
        var = (((xg - mean) ** 2) * valid).sum((-1, -2), keepdim=True) / count
        out = ((xg - mean) / torch.sqrt(var + self.eps)).reshape(b, c, h, w)
        if self.affine:
            out = out * self.weight.to(acc).view(1, c, 1, 1) + self.bias.to(acc).view(1, c, 1, 1)
        return out


class ConvNorm(nn.Conv2d):
    """Conv2d with a masked GroupNorm and optional ReLU (detectron2's ``Conv2d(norm=...)``
    layout: parameters ``weight``/``bias`` and ``norm.weight``/``norm.bias``).

    forward(x (B, Cin, H, W), mask (B, H, W) | None) -> (B, Cout, H, W); with a mask, padded
    inputs are zeroed first so a kxk kernel sees at the valid border what it sees alone.
    """

    def __init__(self, *, in_channels: int, out_channels: int, kernel_size: int, groups: int, relu: bool):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = MaskedGroupNorm(groups, out_channels)
        self.relu = relu
        nn.init.kaiming_uniform_(self.weight, a=1)  # detectron2's c2_xavier_fill

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if mask is not None and self.kernel_size[0] > 1:
            x = x.masked_fill(mask[:, None], 0.0)
        y = self.norm(super().forward(x), mask)
        return F.relu(y) if self.relu else y


def level_mask(mask: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor | None:
    """(B, H, W) padding mask -> (B, h, w) at a feature level (nearest, as DETR does)."""
    if mask is None:
        return None
    return F.interpolate(mask[:, None].to(torch.float32), size=size, mode="nearest")[:, 0].to(torch.bool)


def replicate_padding(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Overwrite each image's padded pixels with its nearest valid edge pixel.

    Bilinear upsampling reads one pixel beyond the valid border; alone, that read is clamped
    to the edge, so replicating the edge makes the padded batch agree.

    Args:
        x: (B, C, H, W); mask: (B, H, W) bool True on padding (valid region is top-left) | None.
    """
    if mask is None:
        return x
    b, c, h, w = x.shape
    valid_h = (~mask[:, :, 0]).sum(1).clamp(min=1)
    valid_w = (~mask[:, 0, :]).sum(1).clamp(min=1)
    rows = torch.minimum(torch.arange(h, device=x.device)[None], valid_h[:, None] - 1)
    cols = torch.minimum(torch.arange(w, device=x.device)[None], valid_w[:, None] - 1)
    x = x.gather(2, rows[:, None, :, None].expand(b, c, h, w))
    return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))
