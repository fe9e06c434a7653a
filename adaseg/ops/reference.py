"""Pure-PyTorch reference implementations: the spec, the fallback and the test oracle.

Every fast path in adaseg (the C++/CUDA deformable attention, the Triton pausing
kernels) must agree with the functions here; tests compare against them in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------
# Multi-scale deformable attention (Deformable-DETR semantics)
# --------------------------------------------------------------------------------------


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention, one ``grid_sample`` per level.

    Args:
        value: (N, S, M, D) per-head values of all levels, flattened level after level.
        spatial_shapes: (L, 2) int64, (H_l, W_l) of each level; sum H_l*W_l == S.
        level_start_index: (L,) int64, offset of each level in S (unused here beyond
            documentation: levels are contiguous and in order).
        sampling_locations: (N, Lq, M, L, P, 2) (x, y) normalised to [0, 1]; outside
            points read zeros.
        attention_weights: (N, Lq, M, L, P).

    Returns:
        (N, Lq, M*D): for each query and head, sum over levels and points of the weight
        times the bilinearly sampled value (grid_sample, align_corners=False, zero padding).
    """
    n, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    value_per_level = value.split(sizes, dim=1)
    # grid_sample wants [-1, 1]; with align_corners=False, x=0 is the left edge of pixel 0.
    grids = 2 * sampling_locations - 1
    sampled = []
    for level, (h, w) in enumerate(spatial_shapes.tolist()):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        v = value_per_level[level].flatten(2).transpose(1, 2).reshape(n * m, d, int(h), int(w))
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    # (N*M, D, Lq, L, P) -> (N*M, D, Lq, L*P)
    stacked = torch.stack(sampled, dim=-2).flatten(-2)
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, n_levels * n_points)
    out = (stacked * weights).sum(-1).view(n, m * d, lq)
    return out.transpose(1, 2).contiguous()


# --------------------------------------------------------------------------------------
# Patch pausing (PAUMER): auxiliary-decoder entropy, top-k keep, assembly
# --------------------------------------------------------------------------------------


def num_kept(n_active: int, ratio: float) -> int:
    """Tokens that stay active when ``ratio`` of ``n_active`` tokens pause.

    ``n_keep = n_active - floor(ratio * n_active)``; the tiny epsilon keeps e.g.
    ``0.29 * 100`` from flooring to 28 through float rounding.
    """
    return n_active - int(math.floor(ratio * n_active + 1e-9))


def aux_entropy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Entropy of the 1x1 auxiliary decoder's class posterior for every token.

    Args:
        x: (B, N, D) tokens (any float dtype).
        weight: (C, D) decoder weight.
        bias: (C,) decoder bias.

    Returns:
        (B, N) entropy ``-sum_c p_c log p_c`` of ``softmax(x @ weight.T + bias)``,
        computed in float32 (float64 when ``x`` is float64). No gradient is needed:
        the entropy only selects tokens.
    """
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    logits = x.to(acc) @ weight.to(acc).t() + bias.to(acc)
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def topk_keep(
    x: torch.Tensor, entropy: torch.Tensor, n_keep: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the ``n_keep`` highest-entropy tokens of each image; pause the rest.

    Ties are broken deterministically: among equal entropies the lower index is kept.

    Args:
        x: (B, n, D) active tokens.
        entropy: (B, n) their auxiliary-decoder entropy.
        n_keep: number of tokens that stay active, 1 <= n_keep <= n.

    Returns:
        keep_idx: (B, n_keep) int64 indices into ``n``, ascending.
        pause_idx: (B, n - n_keep) int64 indices into ``n``, ascending.
        kept: (B, n_keep, D) ``x`` gathered at ``keep_idx`` (differentiable w.r.t. ``x``).
    """
    b, n, d = x.shape
    if not 1 <= n_keep <= n:
        raise ValueError(f"n_keep must be in [1, {n}], got {n_keep}")
    # A stable descending sort keeps equal entropies in index order: lower index first.
    order = torch.sort(entropy, dim=1, descending=True, stable=True).indices
    keep_idx = order[:, :n_keep].sort(dim=1).values
    pause_idx = order[:, n_keep:].sort(dim=1).values
    kept = torch.gather(x, 1, keep_idx.unsqueeze(-1).expand(b, n_keep, d))
    return keep_idx, pause_idx, kept


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, N, D) tokens at (B, n) indices -> (B, n, D)."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(*idx.shape, x.shape[-1]))


def assemble(base: torch.Tensor, idx: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Put ``tokens`` back at positions ``idx`` of ``base`` (out of place).

    Args:
        base: (B, N, D) full-size buffer (e.g. holding tokens paused earlier).
        idx: (B, n) int64 positions in ``N``, unique per image.
        tokens: (B, n, D).

    Returns:
        (B, N, D) copy of ``base`` with rows ``idx`` replaced by ``tokens``;
        differentiable w.r.t. both ``base`` (rows not overwritten) and ``tokens``.
    """
    return base.scatter(1, idx.unsqueeze(-1).expand_as(tokens), tokens.to(base.dtype))
