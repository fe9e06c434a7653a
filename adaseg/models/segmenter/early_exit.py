"""PAUMER's early exit at test time (App. I) for Segmenter: a paused patch is labelled by the
auxiliary decoder of the layer where it paused, and the mask transformer reads only the
patches still active at the exit.

Both decoders output per-patch class logits trained with the same pixel cross-entropy, so
the two kinds of patch are put back on one (h, w) logit grid and upsampled as Segmenter's
decoder output always is: every patch's own argmax is its source's argmax; pixels between
patches of different sources blend their neighbours' logits, as between any two patches.

What runs, per image (FLOPs): the encoder as with the decoder output, plus each paused
patch's auxiliary decoder once more (D x K multiply-adds a patch: the entropy kernel that
selected it does not return its logits), and the mask transformer on the n_active patches
and K class embeddings instead of all N patches.
"""

from __future__ import annotations

import torch
from torch import nn

from adaseg.models.adaptive.output import PauseRecord
from adaseg.models.segmenter.decoder import MaskTransformer

__all__ = ["paused_layer_map", "active_positions", "early_exit_logits"]


def paused_layer_map(paused: list[PauseRecord], batch: int, n_tokens: int, device) -> torch.Tensor:
    """(B, N) int64: the layer after which each patch paused, 0 for patches still active."""
    layers = torch.zeros(batch, n_tokens, dtype=torch.long, device=device)
    for rec in paused:
        if rec.positions.numel():
            layers[rec.rows[:, None], rec.positions] = rec.layer
    return layers


def active_positions(active: torch.Tensor, count: int) -> torch.Tensor:
    """(b, N) bool active patches, each row holding ``count`` of them -> (b, count) int64
    their positions in increasing order (a stable sort puts the active ones first)."""
    order = torch.sort((~active).to(torch.uint8), dim=1, stable=True).indices
    return order[:, :count]


def early_exit_logits(tokens: torch.Tensor, paused: list[PauseRecord], *, aux_decoders: nn.ModuleList,
                      decoder: MaskTransformer, final_norm: nn.Module,
                      valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch logits of the early-exit output.

    Args:
        tokens: (B, N, D) the encoder's patch map at each image's exit, NOT final-normed:
            paused patches hold the features their auxiliary decoder scored.
        paused: the run's pause records (layer, rows, positions).
        aux_decoders: ``aux_decoders[l - 1]`` labels the patches paused after layer l.
        decoder: the mask transformer, run on the active patches only (final-normed first).
        final_norm: the encoder's final LayerNorm.
        valid: (B, N) bool real (non-padding) patches, or None.

    Returns:
        logits (B, N, K) and source (B, N) int64: 0 where the mask transformer labelled the
        patch, l where the auxiliary decoder after layer l did.
    """
    b, n, dim = tokens.shape
    source = paused_layer_map(paused, b, n, tokens.device)
    active = source == 0
    counts = active.sum(1)
    pieces: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (rows (b',), positions (b', m), logits)
    # Images with different exits (or padding) can keep different numbers of patches: one
    # decoder call per count, usually one for the whole batch.
    for count in counts.unique().tolist():
        if count == 0:
            continue
        rows = (counts == count).nonzero().squeeze(1)
        at = active_positions(active[rows], count)
        x = final_norm(torch.gather(tokens[rows], 1, at[..., None].expand(-1, -1, dim)))
        key_valid = None if valid is None else torch.gather(valid[rows], 1, at)
        pieces.append((rows, at, decoder.forward_tokens(x, key_valid)))
    for rec in paused:
        if rec.positions.numel():
            feats = tokens[rec.rows[:, None], rec.positions]  # (b', m, D) as when they paused
            pieces.append((rec.rows, rec.positions, aux_decoders[rec.layer - 1](feats)))
    dtype = pieces[0][2].dtype  # the decoders' (autocast) dtype; pieces cover all N >= 1 patches
    logits = tokens.new_zeros(b, n, decoder.num_classes, dtype=dtype)
    for rows, at, values in pieces:
        logits[rows[:, None], at] = values.to(dtype)
    return logits, source
