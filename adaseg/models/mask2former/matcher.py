"""Hungarian matching of queries to ground-truth segments (Mask2Former's matcher)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from adaseg.models.mask2former.point_sampling import point_sample


class NonFiniteError(FloatingPointError):
    """The matcher met NaN/inf predictions (e.g. a diverged training): no assignment exists."""


def pairwise_sigmoid_ce(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every prediction against every target.

    Args:
        inputs: (Q, P) logits; targets: (n, P) in [0, 1].

    Returns:
        (Q, n) cost.
    """
    p = inputs.shape[1]
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    return (pos @ targets.t() + neg @ (1 - targets).t()) / p


def pairwise_dice(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss 1 - (2|p t| + 1) / (|p| + |t| + 1) of every prediction against every target.

    Args:
        inputs: (Q, P) logits; targets: (n, P). Returns (Q, n).
    """
    probs = inputs.sigmoid()
    numerator = 2 * probs @ targets.t()
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising class + mask + dice costs on uniformly sampled points.

    Args:
        cost_class, cost_mask, cost_dice: cost weights (2, 5, 5 in Mask2Former).
        num_points: points sampled uniformly (shared by predictions and targets of an image).
    """

    def __init__(self, *, cost_class: float, cost_mask: float, cost_dice: float, num_points: int):
        super().__init__()
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(self, logits, masks, labels, target_masks, coords) -> torch.Tensor:
        """Cost of every query for every target of one image.

        Args:
            logits: (Q, K+1); masks: (Q, h, w) logits; labels: (n,) int64;
            target_masks: (n, H, W) float; coords: (P, 2) points in [0, 1].

        Returns:
            (Q, n) float32 cost.
        """
        prob = logits.float().softmax(-1)
        cost_class = -prob[:, labels]
        tgt = point_sample(target_masks[:, None].float(), coords[None].expand(target_masks.shape[0], -1, -1))[:, 0]
        out = point_sample(masks[:, None].float(), coords[None].expand(masks.shape[0], -1, -1))[:, 0]
        return (
            self.cost_mask * pairwise_sigmoid_ce(out, tgt)
            + self.cost_class * cost_class
            + self.cost_dice * pairwise_dice(out, tgt)
        )

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            outputs: ``pred_logits`` (B, Q, K+1), ``pred_masks`` (B, Q, h, w).
            targets: B dicts with ``labels`` (n,) and ``masks`` (n, H, W).

        Returns:
            B pairs (query indices, target indices), int64, of length min(Q, n).
        """
        indices = []
        for b, target in enumerate(targets):
            labels, tmasks = target["labels"], target["masks"]
            if labels.numel() == 0:
                empty = torch.empty(0, dtype=torch.long)
                indices.append((empty, empty))
                continue
            coords = torch.rand(self.num_points, 2, device=tmasks.device)
            cost = self.cost_matrix(outputs["pred_logits"][b], outputs["pred_masks"][b], labels, tmasks, coords)
            if not torch.isfinite(cost).all():
                # scipy would only say "matrix contains invalid numeric entries"
                raise NonFiniteError("the model's outputs hold NaN/inf (seen by the matcher)")
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(np.asarray(cols), dtype=torch.long)))
        return indices
