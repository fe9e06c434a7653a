"""PAUMER's pause selection, shared by every adaptive encoder (Mask2Former's deformable
encoder and Segmenter's ViT).

After a pause layer the layer's 1x1 auxiliary decoder scores every active token; the
``ratio`` of them with the lowest entropy (``"entropy"``) or uniformly random ones
(``"random"``, PAUMER's baseline) are paused. Padding tokens carry no image content, so
they pause before any real token. What happens to the paused tokens afterwards (kept as
attention values, or removed from attention) is the encoder's business, not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adaseg.ops import pausing
from adaseg.ops.pause_stage import stage_for
from adaseg.choices import PAUSE_MODES


@dataclass
class AuxRecord:
    """Auxiliary-decoder logits at one pause stage, for PAUMER's auxiliary loss.

    ``rows``: (b,) batch indices of the images still in the encoder; ``token_idx``: (b, n)
    positions in S of the tokens that were active (decoded); ``logits``: (b, n, num_classes).
    """

    layer: int
    rows: torch.Tensor
    token_idx: torch.Tensor
    logits: torch.Tensor


@dataclass
class PauseSelection:
    """Result of :func:`select_pause` for b images with n active tokens, m = n - n_keep paused.

    ``kept``: (b, n_keep, C) the tokens that stay active; ``kept_at``: (b, n_keep) their
    positions in the full token map; ``paused_local``: (b, m) indices of the paused tokens
    among the n active ones; ``paused_at``: (b, m) their positions in the full token map;
    ``aux``: the auxiliary-decoder record (with gradient), or None when not collected;
    ``keep_local``: (b, n_keep) indices among the n active tokens of the kept ones (the lean
    path sets it: per-token inputs are then gathered from the active views), or None.
    """

    kept: torch.Tensor
    kept_at: torch.Tensor
    paused_local: torch.Tensor
    paused_at: torch.Tensor
    aux: AuxRecord | None
    keep_local: torch.Tensor | None = None


def check_pause_mode(pause_mode: str) -> None:
    """Raise ValueError unless ``pause_mode`` is one of :data:`PAUSE_MODES`."""
    if pause_mode not in PAUSE_MODES:
        raise ValueError(f"pause_mode must be 'entropy' or 'random', got {pause_mode!r}")


def select_pause(
    *,
    layer: int,
    ratio: float,
    tokens: torch.Tensor,
    positions: torch.Tensor | None,
    rows: torch.Tensor,
    decoder: nn.Linear,
    pause_mode: str,
    padding: torch.Tensor | None,
    keep_aux: bool,
    generator: torch.Generator | None,
) -> PauseSelection:
    """Choose which of the active tokens pause after encoder layer ``layer``.

    Args:
        layer: the pause layer (1-based), recorded in the aux record.
        ratio: fraction of the active tokens to pause, in (0, 1).
        tokens: (b, n, C) the active tokens after ``layer``.
        positions: (b, n) int64 positions of the active tokens in the full (b, N) token map,
            or None when every token is active (positions 0..n-1).
        rows: (b,) batch indices of these images (recorded in the aux record).
        decoder: the layer's 1x1 auxiliary decoder (C -> num_classes).
        pause_mode: "entropy" (pause the lowest auxiliary-decoder entropy) or "random".
        padding: (b, N) bool, True on padding tokens of the full map, or None.
        keep_aux: keep the auxiliary decoder's logits (with gradient) for the aux loss.
        generator: RNG for ``pause_mode="random"`` (None: torch's global RNG).
    """
    check_pause_mode(pause_mode)
    b, n, _ = tokens.shape
    if positions is None:
        positions = torch.arange(n, device=tokens.device).expand(b, n)
    aux = AuxRecord(layer, rows, positions, decoder(tokens)) if keep_aux else None
    if pause_mode == "entropy":
        # the selection is not differentiable: the aux decoder learns from its own loss only
        score = pausing.aux_entropy(tokens.detach(), decoder.weight.detach(), decoder.bias.detach())
    else:
        score = torch.rand(b, n, generator=generator, device=tokens.device)
    if padding is not None:
        # padding tokens carry no image content: pause them before any real token
        score = score.masked_fill(torch.gather(padding, 1, positions), float("-inf"))
    n_keep = pausing.num_kept(n, ratio)
    keep_local, pause_local, kept = pausing.topk_keep(tokens, score, n_keep)
    return PauseSelection(
        kept=kept,
        kept_at=torch.gather(positions, 1, keep_local),
        paused_local=pause_local,
        paused_at=torch.gather(positions, 1, pause_local),
        aux=aux,
    )


def select_pause_lean(
    *,
    ratio: float,
    tokens: torch.Tensor,
    positions: torch.Tensor | None,
    decoder: nn.Linear,
    pause_mode: str,
    padding: torch.Tensor | None,
    generator: torch.Generator | None,
) -> PauseSelection:
    """:func:`select_pause` for inference (no autograd, no auxiliary record), through the lean
    stage of :mod:`adaseg.ops.pause_stage`: the same choice (same scores, same ties, padding
    first) in fewer launches, with no dispatch and no host read.

    Args:
        padding: (b, n) bool True on the *active* tokens that are padding (the run's active
            view, not the full map), or None.
        (the others as for :func:`select_pause`)
    """
    b, n, _ = tokens.shape
    entropy = pause_mode == "entropy"
    stage = stage_for(tokens, decoder.weight, decoder.bias, pausing.num_kept(n, ratio), entropy=entropy)
    if entropy:
        score = stage.scores(tokens, decoder.weight, decoder.bias)
    else:
        score = torch.rand(b, n, generator=generator, device=tokens.device)
    sel = stage.select(tokens, score, positions, padding)
    return PauseSelection(kept=sel.kept, kept_at=sel.kept_at, paused_local=sel.paused_local, paused_at=sel.paused_at,
                          aux=None, keep_local=sel.keep_local)
