"""Mask2Former inference: semantic, panoptic and instance outputs from query predictions.

Follows the original ``MaskFormer`` inference (object-mask threshold 0.8, overlap threshold
0.8 by default, stuff segments of one class merged), and adds each segment's score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from adaseg.choices import TASKS


def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
    """(Q, K+1) class logits, (Q, H, W) mask logits -> (K, H, W) per-class scores
    sum_q softmax(cls)_q,k * sigmoid(mask)_q (the "no object" column dropped)."""
    probs = F.softmax(mask_cls, dim=-1)[..., :-1]
    return torch.einsum("qc,qhw->chw", probs, mask_pred.sigmoid())


def panoptic_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    *,
    num_classes: int,
    thing_ids: tuple[int, ...],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
) -> tuple[torch.Tensor, list[dict]]:
    """Panoptic segmentation of one image.

    Args:
        mask_cls: (Q, K+1) class logits; mask_pred: (Q, H, W) mask logits.
        num_classes: K; thing_ids: contiguous ids of thing classes.
        object_mask_threshold: keep queries whose top class score exceeds it.
        overlap_threshold: drop a segment whose visible area over its own (>= 0.5) area is below it.

    Returns:
        (H, W) int32 segment ids (0 = void) and a list of
        ``{"id", "category_id", "isthing", "score"}`` (contiguous category ids).
    """
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    mask_prob = mask_pred.sigmoid()
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_prob[keep]
    h, w = mask_pred.shape[-2:]
    panoptic = torch.zeros((h, w), dtype=torch.int32, device=mask_pred.device)
    segments: list[dict] = []
    if cur_masks.shape[0] == 0:
        return panoptic, segments
    owner = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    things = set(thing_ids)
    stuff_segment: dict[int, int] = {}
    next_id = 0
    for k in range(cur_classes.shape[0]):
        category = int(cur_classes[k])
        isthing = category in things
        own = cur_masks[k] >= 0.5
        mask = (owner == k) & own
        visible, original = int((owner == k).sum()), int(own.sum())
        if visible == 0 or original == 0 or int(mask.sum()) == 0:
            continue
        if visible / original < overlap_threshold:
            continue
        if not isthing and category in stuff_segment:
            # one segment per stuff class: later queries of that class extend it
            panoptic[mask] = stuff_segment[category]
            continue
        next_id += 1
        if not isthing:
            stuff_segment[category] = next_id
        panoptic[mask] = next_id
        segments.append({"id": next_id, "category_id": category, "isthing": isthing, "score": float(cur_scores[k])})
    return panoptic, segments


def instance_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    *,
    num_classes: int,
    thing_ids: tuple[int, ...] | None,
    test_topk: int = 100,
) -> dict:
    """Top-k (query, class) pairs as instances.

    Score = class probability x mean mask probability inside the binarised mask. With
    ``thing_ids`` given, only thing classes are kept (as the original does for panoptic data).

    Returns dict(masks (k, H, W) bool, labels (k,) int64, scores (k,) float).
    """
    q = mask_cls.shape[0]
    probs = F.softmax(mask_cls, dim=-1)[:, :-1]
    labels = torch.arange(num_classes, device=mask_cls.device).unsqueeze(0).expand(q, -1).flatten()
    top_scores, top_index = probs.flatten().topk(min(test_topk, probs.numel()), sorted=False)
    top_labels = labels[top_index]
    query = torch.div(top_index, num_classes, rounding_mode="floor")
    if thing_ids is not None:
        keep = torch.isin(top_labels, torch.as_tensor(thing_ids, dtype=torch.long, device=mask_cls.device))
        top_scores, top_labels, query = top_scores[keep], top_labels[keep], query[keep]
    pred = mask_pred[query]
    binary = pred > 0
    mask_score = (pred.sigmoid().flatten(1) * binary.flatten(1)).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    return {"masks": binary, "labels": top_labels, "scores": top_scores * mask_score}


def postprocess(
    out: dict,
    image_sizes,
    *,
    task: str,
    num_classes: int,
    thing_ids: tuple[int, ...],
    object_mask_threshold: float = 0.8,
    overlap_threshold: float = 0.8,
    test_topk: int = 100,
    output_sizes=None,
) -> list:
    """Per-image results of a forward output.

    Masks are upsampled to the padded input size, cropped to each image's ``(h, w)`` and, if
    ``output_sizes`` is given, resized to it (bilinear), as the original does.

    Args:
        out: model output with ``pred_logits`` (B, Q, K+1), ``pred_masks`` (B, Q, h4, w4)
            and ``input_size`` (H, W) (the padded size).
        image_sizes: B x (h, w) valid sizes.
        task: "panoptic" -> (panoptic (h, w) int32, segments); "semantic" -> (h, w) int64
            argmax map; "instance" -> dict(masks, labels, scores).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if "pred_logits" not in out:
        raise ValueError("postprocess needs a single-exit output (pick out['exits'][k] for all_exits runs)")
    logits, masks = out["pred_logits"], out["pred_masks"]
    if len(image_sizes) != logits.shape[0]:
        raise ValueError(f"{len(image_sizes)} image sizes for a batch of {logits.shape[0]}")
    input_size = tuple(out.get("input_size") or (masks.shape[-2] * 4, masks.shape[-1] * 4))
    masks = F.interpolate(masks.float(), size=input_size, mode="bilinear", align_corners=False)
    results = []
    for i, (h, w) in enumerate(image_sizes):
        mask_pred = masks[i, :, : int(h), : int(w)]
        if output_sizes is not None and tuple(output_sizes[i]) != (int(h), int(w)):
            mask_pred = F.interpolate(mask_pred[None], size=tuple(output_sizes[i]), mode="bilinear", align_corners=False)[0]
        mask_cls = logits[i].float()
        if task == "semantic":
            results.append(semantic_inference(mask_cls, mask_pred).argmax(0))
        elif task == "panoptic":
            results.append(
                panoptic_inference(
                    mask_cls,
                    mask_pred,
                    num_classes=num_classes,
                    thing_ids=thing_ids,
                    object_mask_threshold=object_mask_threshold,
                    overlap_threshold=overlap_threshold,
                )
            )
        else:
            results.append(
                instance_inference(mask_cls, mask_pred, num_classes=num_classes, thing_ids=thing_ids, test_topk=test_topk)
            )
    return results
