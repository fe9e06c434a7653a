"""Step C's utility, targets and the four gate losses of ECO-M2F (paper, Eq. 4-5, Table T2).

Quality ``q`` (N, E) is per image and exit, exits ``e_1 < ... < e_E`` are encoder layers.

* utility ``u_k = q_k - beta * e_k`` (Eq. 4; the cost term uses the exit's *layer number*,
  so skipped potential exits still cost what their layer costs);
* target ``t = argmax_k u_k`` (Eq. 5); ties go to the earliest exit (cheapest).

Undefined quality (NaN; see :mod:`adaseg.runs.derived`): PQ is undefined only when
an image has no ground-truth segment and the exit predicts none, i.e. the exit made no
mistake. So

* an image whose quality is undefined at **every** considered exit carries no signal
  about depth and is **excluded** from training (counted and reported);
* where only **some** exits are undefined, those exits are scored as perfect, q = 1 (the
  others predicted a segment that is not there and score PQ = 0).

Losses, with ``g`` the gate's logits (N, E) and ``p = softmax(g)`` (the appendix writes
``softmax(q_k)`` for the gate's output; it means the logits, as Eq. 6 names them ``g``):

* ``hard-ce``: cross-entropy to the one-hot target ``t`` (the paper's choice).
* ``u-ce``: ``-sum_k u_k log p_k``. Taken literally a negative ``u_k`` rewards ``p_k -> 0``
  without bound, so the weights are ``max(u_k, 0)``; the per-image weights are not
  normalised (the paper's sum), so images with higher utility weigh more.
* ``soft-ce``: cross-entropy to the soft target ``softmax(u / T)``.
* ``soft-mse``: ``sum_k (softmax(u / T)_k - p_k)^2``.

``T`` (temperature) is 1 in the paper. With quality in [0, 1] the differences between
exits are small, so ``softmax(u)`` is close to uniform; a smaller ``T`` sharpens it.
All losses are averaged over images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOSSES = ("hard-ce", "u-ce", "soft-ce", "soft-mse")
TEMPERATURE_LOSSES = ("soft-ce", "soft-mse")


def prepare_quality(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the undefined-quality policy above.

    Args:
        quality: (N, E) float, NaN where undefined.

    Returns:
        ``(q, keep)``: q (N_kept, E) with partial NaNs replaced by 1.0, and keep (N,) bool,
        False for the images undefined at every exit.
    """
    undefined = torch.isnan(quality)
    keep = ~undefined.all(dim=1)
    q = torch.where(undefined, torch.ones_like(quality), quality)[keep]
    return q, keep


def utility(q: torch.Tensor, exits: torch.Tensor, beta: float) -> torch.Tensor:
    """u (N, E) = q - beta * exit layer."""
    return q - beta * exits.to(q.dtype)[None, :]


def targets(q: torch.Tensor, exits: torch.Tensor, beta: float) -> torch.Tensor:
    """(N,) int64 column index of argmax_k u_k; the earliest exit wins ties."""
    return utility(q, exits, beta).argmax(dim=1)


def gate_loss(
    logits: torch.Tensor,
    *,
    loss: str,
    u: torch.Tensor,
    target: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The mean loss over images.

    Args:
        logits: (N, E) the gate's outputs.
        loss: one of :data:`LOSSES`.
        u: (N, E) utility, same dtype as logits.
        target: (N,) int64 target column (used by ``hard-ce``).
        temperature: T of the soft targets.
    """
    if loss == "hard-ce":
        return F.cross_entropy(logits, target)
    log_p = F.log_softmax(logits, dim=1)
    if loss == "u-ce":
        return -(u.clamp_min(0.0) * log_p).sum(1).mean()
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    soft = F.softmax(u / temperature, dim=1)
    if loss == "soft-ce":
        return -(soft * log_p).sum(1).mean()
    if loss == "soft-mse":
        return ((soft - log_p.exp()) ** 2).sum(1).mean()
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")


def oracle_exits(quality: torch.Tensor, exits: torch.Tensor, beta: float) -> torch.Tensor:
    """The oracle gate: each image's exit layer ``argmax_k (q_k - beta * e_k)`` from its own
    Step B row (the val images' quality, evaluation only -- never used to fit a gate).

    Same undefined-quality policy as :func:`prepare_quality`: a NaN exit made no mistake and
    scores 1. An image undefined at every exit then has ``u_k = 1 - beta * e_k`` and goes to
    the earliest exit (the cheapest; it carries no signal about depth), where a gate's
    training would skip it; the oracle must still send every image somewhere.

    Args:
        quality: (N, E) float, NaN where undefined.
        exits: (E,) int64 exit layers, increasing.
        beta: the trade-off (quality per encoder layer), >= 0.

    Returns:
        (N,) int64 exit layer per image; ties go to the earliest exit.
    """
    if not (beta >= 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    q = torch.where(torch.isnan(quality), torch.ones_like(quality), quality)
    return exits.to(torch.long)[targets(q, exits, beta)]
