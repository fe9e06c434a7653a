"""DETR's Hungarian matcher: the one-to-one assignment of queries to ground-truth boxes with the
lowest total cost ``w_class * (-p(class)) + w_l1 * L1(cxcywh) + w_giou * (-GIoU(xyxy))``."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from adaseg.models.detr.boxes import cxcywh_to_xyxy, pairwise_giou


class NonFiniteError(FloatingPointError):
    """The matcher met NaN/inf predictions (e.g. a diverged training): no assignment exists."""


def match_cost(logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, target_boxes: torch.Tensor, *,
               cost_class: float, cost_bbox: float, cost_giou: float) -> torch.Tensor:
    """One image's cost matrix.

    Args:
        logits: (Q, K+1) class logits; boxes: (Q, 4) normalised cxcywh predictions.
        labels: (n,) int64 target classes; target_boxes: (n, 4) normalised cxcywh.

    Returns:
        (Q, n) float cost.
    """
    prob = logits.float().softmax(-1)
    cost = -cost_class * prob[:, labels]
    cost = cost + cost_bbox * torch.cdist(boxes.float(), target_boxes.float(), p=1)
    return cost - cost_giou * pairwise_giou(cxcywh_to_xyxy(boxes.float()), cxcywh_to_xyxy(target_boxes.float()))


class HungarianMatcher(nn.Module):
    """Args: cost_class, cost_bbox, cost_giou: the cost weights (DETR: 1, 5, 2)."""

    def __init__(self, *, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0) -> None:
        super().__init__()
        if cost_class == cost_bbox == cost_giou == 0:
            raise ValueError("the matcher needs at least one non-zero cost weight")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            outputs: ``pred_logits`` (B, Q, K+1), ``pred_boxes`` (B, Q, 4) normalised cxcywh.
            targets: per image ``labels`` (n,) int64 and ``boxes`` (n, 4) normalised cxcywh.

        Returns:
            per image (query indices, target indices), both (min(Q, n),) int64 on the CPU,
            ordered by query index.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        if not (bool(torch.isfinite(logits).all()) and bool(torch.isfinite(boxes).all())):
            raise NonFiniteError("DETR matcher: the predictions hold NaN or inf (has the training diverged?)")
        indices = []
        for i, t in enumerate(targets):
            if len(t["labels"]) == 0:
                empty = torch.zeros(0, dtype=torch.long)
                indices.append((empty, empty))
                continue
            cost = match_cost(logits[i], boxes[i], t["labels"], t["boxes"], cost_class=self.cost_class,
                              cost_bbox=self.cost_bbox, cost_giou=self.cost_giou)
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
        return indices
