"""DETR's training loss: Hungarian matching, class cross-entropy with a down-weighted "no object"
class, L1 and GIoU box losses over the matched pairs, deep supervision over every decoder layer.
ECO-M2F's weighted sum over exits and PAUMER's auxiliary-decoder cross-entropy come from
:class:`~adaseg.models.adaptive.base.AdaptiveCriterion`."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from adaseg.models.adaptive.base import AdaptiveCriterion
from adaseg.models.adaptive.losses import IGNORE
from adaseg.models.adaptive.output import AdaptiveOutput
from adaseg.models.detr.boxes import cxcywh_to_xyxy, pairwise_giou, xyxy_to_cxcywh
from adaseg.models.detr.matcher import HungarianMatcher


def check_targets(targets: list[dict], num_classes: int, batch: int) -> None:
    """Raise ValueError naming the image and field unless every target holds ``labels`` (n,)
    int64 in 0..K-1 and ``boxes`` (n, 4) finite normalised cxcywh with w, h > 0 inside [0, 1]."""
    if not isinstance(targets, (list, tuple)) or len(targets) != batch:
        raise ValueError(f"DETR targets must be a list of {batch} dicts (one per image)")
    for i, t in enumerate(targets):
        if not isinstance(t, dict) or "labels" not in t or "boxes" not in t:
            raise ValueError(f"DETR target {i} must be a dict with 'labels' and 'boxes'")
        labels, boxes = t["labels"], t["boxes"]
        if labels.dim() != 1 or boxes.shape != (labels.shape[0], 4):
            raise ValueError(f"DETR target {i}: labels must be (n,) and boxes (n, 4), got "
                             f"{tuple(labels.shape)} and {tuple(boxes.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"DETR target {i}: labels must be in 0..{num_classes - 1}, got {labels.tolist()}")
        if boxes.numel():
            xyxy = cxcywh_to_xyxy(boxes.float())
            eps = 1e-4  # rounding of a box that touches the border
            if (not bool(torch.isfinite(boxes).all()) or bool((boxes[:, 2:] <= 0).any())
                    or bool((xyxy < -eps).any()) or bool((xyxy > 1 + eps).any())):
                raise ValueError(f"DETR target {i}: boxes must be normalised cxcywh with w, h > 0 inside the image")


def boxes_from_masks(target: dict, thing_ids: tuple[int, ...], valid_size: tuple[int, int]) -> dict:
    """A segmentation target (``masks`` (n, H, W) bool padded with False, ``labels`` (n,), as
    :func:`adaseg.data.collate.collate` makes them) as a detection target: each thing mask's
    tight box (pixel edges) as normalised cxcywh over the image's ``valid_size`` (h, w); stuff
    masks are left out. Boxes follow every transform the masks went through."""
    masks, labels = target["masks"], target["labels"]
    keep = torch.isin(labels, torch.as_tensor(thing_ids, dtype=labels.dtype, device=labels.device))
    keep &= masks.flatten(1).any(1)
    masks, labels = masks[keep], labels[keep]
    h, w = valid_size
    rows, cols = masks.any(2), masks.any(1)  # (n, H), (n, W)
    ar_h = torch.arange(rows.shape[1], device=masks.device)
    ar_w = torch.arange(cols.shape[1], device=masks.device)
    big = max(rows.shape[1], cols.shape[1]) + 1
    y0 = torch.where(rows, ar_h, big).amin(1)
    y1 = torch.where(rows, ar_h, -1).amax(1) + 1
    x0 = torch.where(cols, ar_w, big).amin(1)
    x1 = torch.where(cols, ar_w, -1).amax(1) + 1
    xyxy = torch.stack([x0, y0, x1, y1], 1).float() / torch.tensor([w, h, w, h], device=masks.device)
    return {"labels": labels, "boxes": xyxy_to_cxcywh(xyxy.clamp(0, 1))}


def box_label_map(targets: list[dict], valid_sizes: list[tuple[int, int]], size: tuple[int, int],
                  num_classes: int) -> torch.Tensor:
    """PAUMER's per-pixel labels from boxes: the class of the smallest box covering a pixel,
    ``num_classes`` ("background") where none does, 255 on padding.

    Args:
        targets: per image ``labels`` (n,), ``boxes`` (n, 4) normalised to its valid size.
        valid_sizes: per image (h, w) of its real pixels (top-left of the padded input).
        size: (H, W) of the padded input.

    Returns:
        (B, H, W) int64.
    """
    height, width = size
    out = torch.full((len(targets), height, width), IGNORE, dtype=torch.long, device=targets[0]["boxes"].device
                     if targets else "cpu")
    for i, (t, (h, w)) in enumerate(zip(targets, valid_sizes)):
        out[i, :h, :w] = num_classes
        xyxy = cxcywh_to_xyxy(t["boxes"].float()) * torch.tensor([w, h, w, h], device=out.device)
        order = ((xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])).argsort(descending=True)
        for j in order.tolist():  # largest first, so smaller boxes paint over them
            x0, y0, x1, y1 = (int(v) for v in xyxy[j].round().tolist())
            out[i, max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)] = t["labels"][j]
    return out


def valid_sizes(outputs: AdaptiveOutput) -> list[tuple[int, int]]:
    """Per image (h, w) of its real pixels (padding is at the bottom/right)."""
    b = outputs.gate_features.shape[0]
    height, width = outputs.input_size
    if outputs.padding_mask is None:
        return [(height, width)] * b
    real = ~outputs.padding_mask
    return [(int(real[i, :, 0].sum()), int(real[i, 0, :].sum())) for i in range(b)]


class DetrCriterion(AdaptiveCriterion):
    """DETR's loss with deep supervision.

    Args:
        num_classes: K (the "no object" class is K).
        matcher: the Hungarian matcher (costs 1 / 5 / 2).
        weight_class, weight_bbox, weight_giou: loss weights (1, 5, 2).
        eos_coef: class weight of "no object" (0.1).
        aux_weight: PAUMER auxiliary-decoder loss weight (0.1).

    Targets: per image ``labels`` (n,) int64 contiguous and ``boxes`` (n, 4) cxcywh normalised
    by the image's valid (unpadded) size, as DETR's; or segmentation targets (``masks``,
    ``labels``: what the recipes' loader gives), whose masks of ``thing_ids`` become boxes
    (:func:`boxes_from_masks`).
    """

    def __init__(self, *, num_classes: int, matcher: HungarianMatcher, thing_ids: tuple[int, ...] | None = None,
                 weight_class: float = 1.0,
                 weight_bbox: float = 5.0, weight_giou: float = 2.0, eos_coef: float = 0.1,
                 aux_weight: float = 0.1) -> None:
        super().__init__(aux_weight=aux_weight)
        self.num_classes = num_classes
        self.thing_ids = tuple(range(num_classes)) if thing_ids is None else tuple(int(t) for t in thing_ids)
        self.matcher = matcher
        self.weight_class, self.weight_bbox, self.weight_giou = weight_class, weight_bbox, weight_giou
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def prepare_targets(self, outputs: AdaptiveOutput, targets: list[dict]) -> tuple[list[dict], float, AdaptiveOutput]:
        """Checked targets on the outputs' device, the number of boxes the losses average over
        (mean over ranks, at least 1), and the outputs (for the auxiliary labels)."""
        device = outputs.gate_features.device
        if isinstance(targets, (list, tuple)) and all(isinstance(t, dict) and "boxes" not in t and "masks" in t
                                                      for t in targets):
            targets = [boxes_from_masks(t, self.thing_ids, v) for t, v in zip(targets, valid_sizes(outputs))]
        check_targets(targets, self.num_classes, outputs.gate_features.shape[0])
        targets = [{"labels": t["labels"].to(device, torch.long), "boxes": t["boxes"].to(device, torch.float32)}
                   for t in targets]
        n = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(n)
            n = n / dist.get_world_size()
        return targets, max(float(n), 1.0), outputs

    def head_loss(self, heads: dict, prepared) -> dict:
        """One exit's ``loss_ce``, ``loss_bbox``, ``loss_giou`` (last decoder layer, weighted) and
        ``total``: their sum over the last and every earlier decoder layer."""
        targets, num_boxes, _ = prepared
        parts = self._layer_loss(heads, targets, num_boxes)
        total = parts["loss_ce"] + parts["loss_bbox"] + parts["loss_giou"]
        for aux in heads.get("aux_outputs", []):
            p = self._layer_loss(aux, targets, num_boxes)
            total = total + p["loss_ce"] + p["loss_bbox"] + p["loss_giou"]
        parts["total"] = total
        return parts

    def aux_labels(self, outputs: AdaptiveOutput, prepared) -> torch.Tensor:
        targets, _, _ = prepared
        return box_label_map(targets, valid_sizes(outputs), tuple(outputs.input_size), self.num_classes)

    def _layer_loss(self, outputs: dict, targets: list[dict], num_boxes: float) -> dict:
        logits, boxes = outputs["pred_logits"].float(), outputs["pred_boxes"].float()
        indices = self.matcher({"pred_logits": logits, "pred_boxes": boxes}, targets)
        b, q, _ = logits.shape
        classes = torch.full((b, q), self.num_classes, dtype=torch.long, device=logits.device)
        for i, (src, tgt) in enumerate(indices):
            classes[i, src.to(logits.device)] = targets[i]["labels"][tgt.to(logits.device)]
        loss_ce = F.cross_entropy(logits.transpose(1, 2), classes, self.empty_weight.to(logits.device))
        src = torch.cat([boxes[i][s.to(boxes.device)] for i, (s, _) in enumerate(indices)])
        tgt = torch.cat([targets[i]["boxes"][t.to(boxes.device)] for i, (_, t) in enumerate(indices)])
        if src.shape[0] == 0:
            loss_bbox = loss_giou = boxes.sum() * 0.0
        else:
            loss_bbox = F.l1_loss(src, tgt, reduction="sum") / num_boxes
            giou = torch.diag(pairwise_giou(cxcywh_to_xyxy(src), cxcywh_to_xyxy(tgt)))
            loss_giou = (1 - giou).sum() / num_boxes
        return {"loss_ce": self.weight_class * loss_ce, "loss_bbox": self.weight_bbox * loss_bbox,
                "loss_giou": self.weight_giou * loss_giou}
