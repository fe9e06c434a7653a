"""Box conversions and generalised IoU (Rezatofighi et al. 2019), the geometry DETR's matcher
and losses use. Boxes are (..., 4): ``cxcywh`` (centre x, centre y, width, height) or ``xyxy``
(x0, y0, x1, y1) with x1 >= x0 and y1 >= y0."""

from __future__ import annotations

import torch


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) cxcywh -> (..., 4) xyxy."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy -> (..., 4) cxcywh."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy -> (...) area."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 4), (M, 4) xyxy -> IoU (N, M) and union (N, M)."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union, union


def pairwise_giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), xyxy:
    IoU - (|C| - |A u B|) / |C| with C the smallest box enclosing both; in [-1, 1].

    Degenerate boxes (x1 < x0 or y1 < y0) raise ValueError: their areas are negative and the
    ratio has no meaning (a diverged box head shows up here first)."""
    if bool((a[:, 2:] < a[:, :2]).any()) or bool((b[:, 2:] < b[:, :2]).any()):
        raise ValueError("generalised IoU needs boxes with x1 >= x0 and y1 >= y0")
    iou, union = pairwise_iou(a, b)
    lt = torch.min(a[:, None, :2], b[None, :, :2])
    rb = torch.max(a[:, None, 2:], b[None, :, 2:])
    enclosing = (rb - lt).clamp(min=0).prod(-1)
    return iou - (enclosing - union) / enclosing
