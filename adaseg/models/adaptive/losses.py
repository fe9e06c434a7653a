"""The loss terms every model's criterion shares (combined by
:class:`~adaseg.models.adaptive.base.AdaptiveCriterion`).

* ECO-M2F's weighted stochastic depth: with ``record_exits`` a model returns the decoder
  outputs at every exit k in ``out.exits``; the training loss is ``sum_k alpha_k L_k`` with
  one weight alpha_k per exit. Each criterion supplies its own per-exit loss L_k;
  :func:`weighted_exit_loss` checks the weights and sums.
* PAUMER's auxiliary loss (:func:`aux_decoder_loss`): cross-entropy of the 1x1 auxiliary
  decoders' logits against the label at each decoded token's centre.
* Self-distillation of an early exit toward the deepest exit (:func:`exit_distillation`;
  ``train-parent --distill``, after Li et al. 2019, "Improved Techniques for Training
  Adaptive Deep Networks").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = 255  # the label no loss reads (padding, unlabelled pixels)


@dataclass
class ExitLosses:
    """``total``: sum_k alpha_k L_k (scalar); ``per_exit``: ``{"loss_exit{k}": L_k}`` in the
    order of the exits; ``deepest``: the parts dict of the last exit (models list their exits
    in increasing order, so the deepest)."""

    total: torch.Tensor
    per_exit: dict[str, torch.Tensor]
    deepest: dict[str, torch.Tensor]


def weighted_exit_loss(
    exits: Mapping[int, dict],
    exit_weights: Mapping[int, float] | None,
    loss_of: Callable[[dict], dict[str, torch.Tensor]],
) -> ExitLosses:
    """Check ``exit_weights`` against ``exits``, then sum alpha_k L_k over the exits in order.

    Args:
        exits: ``out.exits`` of a recorded-exits run, {k: that exit's outputs}.
        exit_weights: {k: alpha_k}, one weight for exactly each exit (checked before any
            loss is computed).
        loss_of: that exit's outputs -> dict of scalar loss parts whose ``"total"`` is L_k;
            called once per exit, in the order of ``exits``.
    """
    if exit_weights is None or set(exit_weights) != set(exits):
        raise ValueError(f"exit_weights must give a weight for each exit {sorted(exits)}, got {exit_weights}")
    if not exits:
        raise ValueError("outputs['exits'] is empty: a recorded-exits output has at least one exit")
    total = 0.0
    per_exit: dict[str, torch.Tensor] = {}
    for k, out_k in exits.items():
        parts = loss_of(out_k)
        per_exit[f"loss_exit{k}"] = parts["total"]
        total = total + exit_weights[k] * parts["total"]
    return ExitLosses(total=total, per_exit=per_exit, deepest=parts)


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
        records: :class:`~adaseg.models.adaptive.pause_selection.AuxRecord` list (may be empty).
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


def exit_distillation(
    student_logits: torch.Tensor,
    student_masks: torch.Tensor,
    teacher_logits: torch.Tensor,
    teacher_masks: torch.Tensor,
    *,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-distillation of one early exit (student) toward the deepest exit (teacher), query
    by query (the decoder is shared, so query j of every exit starts from the same learned
    query and is the same slot; no matching).

    With ``T = temperature``, ``B`` images, ``Q`` queries, ``C + 1`` classes (no-object
    included) and mask logits of ``H x W`` pixels, the teacher **detached** (no gradient
    reaches the deepest exit through this term):

    * class term ``D_cls = T^2 / (B Q) * sum_{b,q} KL(softmax(t_bq / T) || softmax(s_bq / T))``
      (Hinton et al.'s T^2 keeps the gradient scale independent of T);
    * mask term ``D_mask = 1 / (B Q H W) * sum BCE(sigmoid(s_mask), sigmoid(t_mask))``, the
      binary cross-entropy of the student's mask logits toward the teacher's per-pixel
      probabilities as soft targets, ``-(y log sigmoid(s) + (1 - y) log(1 - sigmoid(s)))``
      with ``y = sigmoid(t)``. Its minimum over ``s`` is at ``s = t`` and equals the teacher's
      mean binary entropy, not 0 (the gradient there is 0).

    Li et al. mix ``(1 - lambda) CE + lambda KL`` toward an ensemble of the later exits; here
    the term is *added* to the exit's own loss (weight ``--distill`` times alpha_k, see
    :class:`~adaseg.models.mask2former.criterion.SetCriterion`) and the teacher is the
    deepest exit alone, as the issue asks.

    Args:
        student_logits, teacher_logits: (B, Q, C + 1) class logits.
        student_masks, teacher_masks: (B, Q, H, W) mask logits.
        temperature: T > 0.

    Returns:
        ``(D_cls, D_mask)``, float32 scalars.
    """
    if student_logits.shape != teacher_logits.shape or student_masks.shape != teacher_masks.shape:
        raise ValueError(f"student and teacher shapes differ: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)}, {tuple(student_masks.shape)} vs {tuple(teacher_masks.shape)}")
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)  # (B, Q)
    d_cls = t * t * kl.mean()
    d_mask = F.binary_cross_entropy_with_logits(student_masks.float(), teacher_masks.detach().float().sigmoid())
    return d_cls, d_mask
