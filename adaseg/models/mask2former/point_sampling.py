"""Point sampling for mask losses (PointRend-style, as Mask2Former uses)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample maps at normalised points.

    Args:
        maps: (N, C, H, W); coords: (N, P, 2) (x, y) in [0, 1] (align_corners=False).

    Returns:
        (N, C, P).
    """
    grid = (2.0 * coords - 1.0).unsqueeze(2).to(maps.dtype)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False).squeeze(3)


def uncertain_points(
    logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float
) -> torch.Tensor:
    """Points where the prediction is least certain, plus uniform ones.

    Draws ``num_points * oversample_ratio`` uniform candidates, keeps the
    ``importance_sample_ratio * num_points`` with the smallest ``|logit|``, fills the rest with
    fresh uniform points.

    Args:
        logits: (N, 1, H, W) mask logits (no gradient needed).

    Returns:
        (N, num_points, 2) coordinates in [0, 1].
    """
    n = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    candidates = torch.rand(n, num_sampled, 2, device=logits.device)
    uncertainty = -point_sample(logits, candidates).abs()[:, 0]  # (N, num_sampled)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = uncertainty.topk(num_uncertain, dim=1).indices
    chosen = torch.gather(candidates, 1, idx[..., None].expand(n, num_uncertain, 2))
    if num_random > 0:
        chosen = torch.cat((chosen, torch.rand(n, num_random, 2, device=logits.device)), 1)
    return chosen
