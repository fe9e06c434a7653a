"""DETR's sine position embedding, normalised over the real (unpadded) part of the map."""

from __future__ import annotations

import math

import torch


def sine_positions(real: torch.Tensor, dim: int, *, temperature: float = 10000.0,
                   scale: float = 2 * math.pi) -> torch.Tensor:
    """Positions of a (B, h, w) token map as DETR embeds them.

    Each token's row and column are counted over real tokens only (a cumulative sum of
    ``real``), divided by the count at the map's last row / column (so a padded image gets the
    same positions as the same image unpadded) and scaled to [0, ``scale``]; each coordinate
    gives ``dim // 2`` channels of interleaved sin/cos at geometric frequencies.

    Args:
        real: (B, h, w) bool, True on real tokens (not padding).
        dim: output channels (even; y channels first, then x).

    Returns:
        (B, dim, h, w) float32.
    """
    if dim % 2:
        raise ValueError(f"sine positions need an even number of channels, got {dim}")
    feats = dim // 2
    mask = real.float()
    y = mask.cumsum(1)
    x = mask.cumsum(2)
    eps = 1e-6
    y = y / (y[:, -1:, :] + eps) * scale
    x = x / (x[:, :, -1:] + eps) * scale
    steps = torch.arange(feats, dtype=torch.float32, device=real.device)
    freq = temperature ** (2 * torch.div(steps, 2, rounding_mode="floor") / feats)
    px, py = x[..., None] / freq, y[..., None] / freq
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)
