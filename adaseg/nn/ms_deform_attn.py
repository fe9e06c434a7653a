"""The multi-scale deformable attention module (Deformable-DETR's MSDeformAttn)."""

from __future__ import annotations

import math

import torch
from torch import nn

from adaseg.ops.ms_deform_attn import ms_deform_attn


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention with offset, weight, value and output projections.

    Parameter names match Deformable-DETR / Mask2Former (``sampling_offsets``,
    ``attention_weights``, ``value_proj``, ``output_proj``) so their checkpoints map 1:1.

    Args:
        d_model: channels C of queries and values.
        n_levels: number of feature levels L.
        n_heads: attention heads M; C must be divisible by M.
        n_points: sampling points P per head and level.
    """

    def __init__(self, *, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable-DETR's initialisation: head h's points start on a ray at angle
        2*pi*h/M, point p at distance p+1 (in pixels of each level), zero offset weights."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        for p in range(self.n_points):
            grid[:, :, p, :] *= p + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        input_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            query: (N, Lq, C) queries (with positional embedding added).
            reference_points: (N, Lq, L, 2) in [0, 1], (x, y) per level.
            input_flatten: (N, S, C) values of all levels, flattened level after level.
                Lq may be smaller than S (e.g. only the active tokens of a paused encoder).
            spatial_shapes: (L, 2) int64 (H_l, W_l).
            level_start_index: (L,) int64.
            input_padding_mask: (N, S) bool, True where the value is padding (zeroed).

        Returns:
            (N, Lq, C).
        """
        n, lq, _ = query.shape
        _, s, _ = input_flatten.shape
        if reference_points.shape[-1] != 2:
            raise ValueError(f"reference_points must end in 2 (x, y), got {tuple(reference_points.shape)}")
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, lq, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        # Offsets are in pixels of each level: normalise by (W_l, H_l).
        normaliser = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)
        locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        out = ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)
        return self.output_proj(out)
