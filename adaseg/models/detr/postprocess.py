"""DETR's post-processing: every query becomes a scored box."""

from __future__ import annotations

import torch

from adaseg.models.detr.boxes import cxcywh_to_xyxy


def scored_boxes(logits: torch.Tensor, boxes: torch.Tensor, sizes) -> list[dict]:
    """Per image the Q queries as ``{"boxes" (Q, 4) xyxy pixels, "scores" (Q,), "labels" (Q,)}``.

    A query's label is its most likely real class and its score that class's probability
    (softmax over K + 1, "no object" left out), as DETR's ``PostProcess``.

    Args:
        logits: (B, Q, K+1); boxes: (B, Q, 4) cxcywh normalised to the image.
        sizes: B x (h, w) the size to scale boxes to.
    """
    if len(sizes) != logits.shape[0]:
        raise ValueError(f"{len(sizes)} image sizes for a batch of {logits.shape[0]}")
    prob = logits.float().softmax(-1)[..., :-1]
    scores, labels = prob.max(-1)
    xyxy = cxcywh_to_xyxy(boxes.float())
    out = []
    for i, (h, w) in enumerate(sizes):
        scale = torch.tensor([w, h, w, h], dtype=xyxy.dtype, device=xyxy.device)
        out.append({"boxes": xyxy[i] * scale, "scores": scores[i], "labels": labels[i]})
    return out
