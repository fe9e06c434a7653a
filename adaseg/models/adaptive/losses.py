"""The loss terms every model's criterion shares (combined by
:class:`~adaseg.models.adaptive.base.AdaptiveCriterion`).

* ECO-M2F's weighted stochastic depth: with ``record_exits`` a model returns the decoder
  outputs at every exit k in ``out.exits``; the training loss is ``sum_k alpha_k L_k`` with
  one weight alpha_k per exit. Each criterion supplies its own per-exit loss L_k;
  :func:`weighted_exit_loss` checks the weights and sums.
* PAUMER's auxiliary loss (:func:`aux_decoder_loss`): cross-entropy of the 1x1 auxiliary
  decoders' logits against the label at each decoded token's centre.
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
