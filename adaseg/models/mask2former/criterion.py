"""Mask2Former's training loss (Hungarian matching, class CE + point-sampled mask BCE and
dice, deep supervision), ECO-M2F's weighted sum over exits, and PAUMER's auxiliary-decoder
cross-entropy."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from adaseg.models.adaptive.output import AdaptiveOutput
from adaseg.models.adaptive.losses import weighted_exit_loss
from adaseg.models.mask2former.matcher import HungarianMatcher
from adaseg.models.mask2former.point_sampling import point_sample, uncertain_points

IGNORE = 255


def sigmoid_ce_loss(logits: torch.Tensor, labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    """(M, P) logits, (M, P) targets -> sum over masks of the per-point mean BCE, / num_masks."""
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    """(M, P) logits, (M, P) targets -> sum of 1 - (2|p t| + 1) / (|p| + |t| + 1), / num_masks."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * labels).sum(-1)
    denominator = probs.sum(-1) + labels.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def pad_targets(targets: list[dict], size: tuple[int, int]) -> list[dict]:
    """Pad each target's ``masks`` (n, h, w) with False and ``semantic`` (h, w) with 255 to
    the padded batch size (H, W) the predictions cover."""
    out = []
    height, width = size
    for t in targets:
        masks = t["masks"]
        h, w = masks.shape[-2:]
        if h > height or w > width:
            raise ValueError(f"target of size {(h, w)} is larger than the input {size}")
        item = dict(t)
        item["masks"] = F.pad(masks.to(torch.bool), (0, width - w, 0, height - h), value=False)
        if "semantic" in t:
            sem = t["semantic"]
            item["semantic"] = F.pad(sem.to(torch.long), (0, width - sem.shape[-1], 0, height - sem.shape[-2]), value=IGNORE)
        out.append(item)
    return out


def token_labels(semantic: torch.Tensor, token_shapes: torch.Tensor) -> torch.Tensor:
    """Semantic label at the centre of every encoder token.

    Args:
        semantic: (B, H, W) int64 (255 = ignore); token_shapes: (L, 2) level sizes.

    Returns:
        (B, S) int64, levels concatenated in the encoder's order.
    """
    b, height, width = semantic.shape
    labels = []
    for h, w in token_shapes.tolist():
        ys = ((torch.arange(h, device=semantic.device) + 0.5) * height / h).floor().long().clamp(max=height - 1)
        xs = ((torch.arange(w, device=semantic.device) + 0.5) * width / w).floor().long().clamp(max=width - 1)
        labels.append(semantic[:, ys][:, :, xs].flatten(1))
    return torch.cat(labels, 1)


def aux_decoder_loss(records, semantic: torch.Tensor, token_shapes: torch.Tensor) -> torch.Tensor:
    """PAUMER's auxiliary loss: cross-entropy of the auxiliary-decoder logits of every
    decoded token against the semantic label at its centre (255 ignored), averaged over all
    decoded tokens of all pause stages.

    Args:
        records: :class:`~adaseg.models.mask2former.encoder.AuxRecord` list (may be empty).
        semantic: (B, H, W) padded semantic labels; token_shapes: (L, 2).
    """
    if not records:
        return semantic.new_zeros((), dtype=torch.float32)
    all_labels = token_labels(semantic, token_shapes)
    total, count = 0.0, 0
    for rec in records:
        labels = all_labels.index_select(0, rec.rows).gather(1, rec.token_idx)
        ce = F.cross_entropy(rec.logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum")
        total = total + ce
        count += int((labels != IGNORE).sum())
    return total / max(count, 1)


class SetCriterion(nn.Module):
    """Mask2Former's loss with deep supervision.

    Args:
        num_classes: K (the "no object" class is K).
        matcher: the Hungarian matcher.
        weight_class, weight_mask, weight_dice: loss weights (2, 5, 5).
        eos_coef: class weight of "no object" (0.1).
        num_points: points per mask for the losses (12544 in Mask2Former).
        oversample_ratio, importance_sample_ratio: importance sampling (3.0, 0.75).
        aux_weight: PAUMER auxiliary-decoder loss weight (0.1).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_class: float = 2.0,
        weight_mask: float = 5.0,
        weight_dice: float = 5.0,
        eos_coef: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        aux_weight: float = 0.1,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_class = weight_class
        self.weight_mask = weight_mask
        self.weight_dice = weight_dice
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.aux_weight = aux_weight
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def forward(self, outputs: AdaptiveOutput, targets: list[dict], *,
                exit_weights: dict[int, float] | None = None) -> dict:
        """
        Args:
            outputs: a model output (single exit, or recorded ``exits``).
            targets: per image ``masks`` (n, h, w) bool, ``labels`` (n,) int64 and, for the
                auxiliary loss, ``semantic`` (h, w) int64 (255 = ignore).
            exit_weights: {exit: alpha_k}, required with recorded-exits outputs (ECO-M2F's
                weighted stochastic depth: loss = sum_k alpha_k L_k).

        Returns:
            dict of scalar tensors: ``loss`` (the total to minimise), ``loss_ce``,
            ``loss_mask``, ``loss_dice`` (final layer, weighted; of the deepest exit when
            several), ``loss_aux_decoder`` (unweighted) and ``loss_exit{k}`` per exit.
        """
        targets = pad_targets(targets, tuple(outputs.input_size))
        num_masks = self._num_masks(targets, outputs)
        result: dict[str, torch.Tensor] = {}
        if outputs.exits:
            losses = weighted_exit_loss(
                outputs.exits, exit_weights, lambda out_k: self._set_loss(out_k, targets, num_masks)
            )
            total = losses.total
            result.update(losses.per_exit)
            result.update({n: v for n, v in losses.deepest.items() if n != "total"})  # deepest exit's parts
        else:
            parts = self._set_loss(outputs.single_heads(), targets, num_masks)
            total = parts["total"]
            result.update({n: v for n, v in parts.items() if n != "total"})
        records = outputs.aux_logits
        if records:
            if any("semantic" not in t for t in targets):
                raise ValueError("the auxiliary-decoder loss needs a 'semantic' map in every target")
            semantic = torch.stack([t["semantic"] for t in targets])
            aux = aux_decoder_loss(records, semantic, outputs.token_shapes)
        else:
            aux = torch.zeros((), device=outputs.gate_features.device)
        result["loss_aux_decoder"] = aux
        result["loss"] = total + self.aux_weight * aux
        return result

    def _num_masks(self, targets, outputs) -> float:
        n = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=outputs.gate_features.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(n)
            n = n / dist.get_world_size()
        return max(float(n), 1.0)

    def _set_loss(self, outputs: dict, targets: list[dict], num_masks: float) -> dict:
        """Final + deep-supervision losses of one decoder run; ``total`` is their weighted sum."""
        parts = self._layer_loss(outputs, targets, num_masks)
        total = parts["loss_ce"] + parts["loss_mask"] + parts["loss_dice"]
        for aux in outputs.get("aux_outputs", []):
            aux_parts = self._layer_loss(aux, targets, num_masks)
            total = total + aux_parts["loss_ce"] + aux_parts["loss_mask"] + aux_parts["loss_dice"]
        parts["total"] = total
        return parts

    def _layer_loss(self, outputs: dict, targets: list[dict], num_masks: float) -> dict:
        logits, masks = outputs["pred_logits"].float(), outputs["pred_masks"].float()
        indices = self.matcher({"pred_logits": logits, "pred_masks": masks}, targets)
        b, q, _ = logits.shape
        classes = torch.full((b, q), self.num_classes, dtype=torch.long, device=logits.device)
        for i, (src, tgt) in enumerate(indices):
            classes[i, src.to(logits.device)] = targets[i]["labels"][tgt.to(logits.device)].to(logits.device)
        loss_ce = F.cross_entropy(logits.transpose(1, 2), classes, self.empty_weight.to(logits.device))

        src_masks = torch.cat([masks[i][s.to(masks.device)] for i, (s, _) in enumerate(indices)])
        tgt_masks = torch.cat([targets[i]["masks"][t.to(masks.device)] for i, (_, t) in enumerate(indices)])
        if src_masks.shape[0] == 0:
            zero = masks.sum() * 0.0
            loss_mask = loss_dice = zero
        else:
            with torch.no_grad():
                coords = uncertain_points(
                    src_masks[:, None], self.num_points, self.oversample_ratio, self.importance_sample_ratio
                )
                point_labels = point_sample(tgt_masks[:, None].float(), coords)[:, 0]
            point_logits = point_sample(src_masks[:, None], coords)[:, 0]
            loss_mask = sigmoid_ce_loss(point_logits, point_labels, num_masks)
            loss_dice = dice_loss(point_logits, point_labels, num_masks)
        return {
            "loss_ce": self.weight_class * loss_ce,
            "loss_mask": self.weight_mask * loss_mask,
            "loss_dice": self.weight_dice * loss_dice,
        }
