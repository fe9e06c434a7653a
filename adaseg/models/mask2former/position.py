"""Sine positional encoding (DETR / Mask2Former ``PositionEmbeddingSine``, normalised)."""

from __future__ import annotations

import math

import torch


def sine_position(mask: torch.Tensor, channels: int, *, temperature: float = 10000.0) -> torch.Tensor:
    """Normalised 2-D sine/cosine positions that honour padding.

    Coordinates are cumulative counts of valid pixels, divided by the valid extent, so a
    padded image gets at its valid pixels exactly the encoding it gets alone.

    Args:
        mask: (B, H, W) bool, True on padding.
        channels: output channels C (even); C/2 for y then C/2 for x.

    Returns:
        (B, C, H, W) float32 (zeros at padding rows/columns that have no valid pixel).
    """
    if channels % 2:
        raise ValueError(f"positional channels must be even, got {channels}")
    feats = channels // 2
    scale = 2 * math.pi
    eps = 1e-6
    not_mask = (~mask).to(torch.float32)
    y_embed = not_mask.cumsum(1)
    x_embed = not_mask.cumsum(2)
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(feats, dtype=torch.float32, device=mask.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / feats)
    pos_x = x_embed[..., None] / dim_t
    pos_y = y_embed[..., None] / dim_t
    # even channels sin, odd channels cos, interleaved as in DETR
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).contiguous()
