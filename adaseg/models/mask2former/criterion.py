"""Mask2Former's training loss: Hungarian matching, class CE + point-sampled mask BCE and
dice, deep supervision. ECO-M2F's weighted sum over exits and PAUMER's auxiliary-decoder
cross-entropy come from :class:`~adaseg.models.adaptive.base.AdaptiveCriterion`."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from adaseg.models.adaptive.base import AdaptiveCriterion
from adaseg.models.adaptive.losses import IGNORE, exit_distillation
from adaseg.models.adaptive.output import AdaptiveOutput
from adaseg.models.mask2former.matcher import HungarianMatcher
from adaseg.models.mask2former.point_sampling import point_sample, uncertain_points


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


class SetCriterion(AdaptiveCriterion):
    """Mask2Former's loss with deep supervision.

    Args:
        num_classes: K (the "no object" class is K).
        matcher: the Hungarian matcher.
        weight_class, weight_mask, weight_dice: loss weights (2, 5, 5).
        eos_coef: class weight of "no object" (0.1).
        num_points: points per mask for the losses (12544 in Mask2Former).
        oversample_ratio, importance_sample_ratio: importance sampling (3.0, 0.75).
        aux_weight: PAUMER auxiliary-decoder loss weight (0.1).
        distill_weight: lambda of the self-distillation of every earlier exit toward the
            deepest (``train-parent --distill``; 0 = off, the default). With recorded exits
            ``e_1 < ... < e_K`` and their weights alpha_k, the loss gains
            ``lambda * sum_{k < K} alpha_k (D_cls,k + D_mask,k)`` on the final decoder
            layer's outputs (:func:`~adaseg.models.adaptive.losses.exit_distillation`).
        distill_temperature: T of the class term (1.0).
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
        distill_weight: float = 0.0,
        distill_temperature: float = 1.0,
    ):
        super().__init__(aux_weight=aux_weight)
        if not (distill_weight >= 0 and distill_temperature > 0):
            raise ValueError(f"distill_weight must be >= 0 and distill_temperature > 0, got "
                             f"{distill_weight!r}, {distill_temperature!r}")
        self.distill_weight = float(distill_weight)
        self.distill_temperature = float(distill_temperature)
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_class = weight_class
        self.weight_mask = weight_mask
        self.weight_dice = weight_dice
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def prepare_targets(self, outputs: AdaptiveOutput, targets: list[dict]) -> tuple[list[dict], float]:
        """Targets padded to the input (per image ``masks`` (n, h, w) bool, ``labels`` (n,)
        int64 and, for the auxiliary loss, ``semantic`` (h, w) int64, 255 = ignore) and the
        number of masks the losses are averaged over."""
        targets = pad_targets(targets, tuple(outputs.input_size))
        return targets, self._num_masks(targets, outputs)

    def head_loss(self, heads: dict, prepared: tuple[list[dict], float]) -> dict:
        """One exit's ``loss_ce``, ``loss_mask``, ``loss_dice`` (final decoder layer, weighted)
        and ``total``, their sum over the final and the deep-supervision layers."""
        targets, num_masks = prepared
        parts = self._layer_loss(heads, targets, num_masks)
        total = parts["loss_ce"] + parts["loss_mask"] + parts["loss_dice"]
        for aux in heads.get("aux_outputs", []):
            aux_parts = self._layer_loss(aux, targets, num_masks)
            total = total + aux_parts["loss_ce"] + aux_parts["loss_mask"] + aux_parts["loss_dice"]
        parts["total"] = total
        return parts

    def forward(self, outputs: AdaptiveOutput, targets: list[dict], *,
                exit_weights: dict[int, float] | None = None) -> dict:
        """The base loss (:meth:`AdaptiveCriterion.forward`), plus, with ``distill_weight`` > 0
        and recorded exits, ``loss_distill_exit{k}`` per earlier exit (D_cls + D_mask),
        ``loss_distill`` (their alpha-weighted sum) and ``lambda * loss_distill`` in ``loss``."""
        result = super().forward(outputs, targets, exit_weights=exit_weights)
        if self.distill_weight == 0.0 or len(outputs.exits) < 2:
            return result
        ks = list(outputs.exits)
        deepest = outputs.exits[ks[-1]]
        total = result["loss"].new_zeros(())
        for k in ks[:-1]:
            d_cls, d_mask = exit_distillation(outputs.exits[k]["pred_logits"], outputs.exits[k]["pred_masks"],
                                              deepest["pred_logits"], deepest["pred_masks"],
                                              temperature=self.distill_temperature)
            result[f"loss_distill_exit{k}"] = d_cls + d_mask
            total = total + exit_weights[k] * (d_cls + d_mask)
        result["loss_distill"] = total
        result["loss"] = result["loss"] + self.distill_weight * total
        return result

    def aux_labels(self, outputs: AdaptiveOutput, prepared: tuple[list[dict], float]) -> torch.Tensor:
        targets, _ = prepared
        if any("semantic" not in t for t in targets):
            raise ValueError("the auxiliary-decoder loss needs a 'semantic' map in every target")
        return torch.stack([t["semantic"] for t in targets])

    def _num_masks(self, targets, outputs) -> float:
        n = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=outputs.gate_features.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(n)
            n = n / dist.get_world_size()
        return max(float(n), 1.0)

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
