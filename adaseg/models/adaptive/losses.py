"""ECO-M2F's weighted stochastic-depth loss over exits, shared by every model's criterion.

With ``record_exits`` a model returns the decoder outputs at every exit k in
``out.exits``; the training loss is ``sum_k alpha_k L_k`` with one weight alpha_k per exit.
Each criterion supplies its own per-exit loss L_k; this module checks the weights and sums.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch


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
