"""Lite-M2F's encoder: Lite-DETR's interleaved multi-scale encoder on the adaptive run.

Lite-DETR (arXiv 2303.07335) splits the encoder's scales into **high-level** (low-resolution)
and **low-level** (high-resolution) tokens. Most layers update only the high-level tokens as
queries, sampling values from every scale; every so often one layer updates all tokens.
ECO-M2F's Lite-M2F uses the configuration "H3L1-(5+1)x1" without key-aware attention:
layers 1..K-1 (1-5) update the high-level tokens, layer K (6) is a plain deformable layer
over all scales.

Which of Mask2Former's three encoder levels are high and low: Lite-DETR's four DETR scales
are strides 8/16/32/64, of which the stride-8 map (the largest, ~75% of the tokens) is its
one low-level scale ("L1") and the three coarser ones are high-level ("H3"). Mask2Former's
encoder holds strides 32/16/8 (its stride-4 map is only in the FPN path), so the same rule
gives **high = strides 32 and 16** (``s1``, ``s2``: the first two levels of the token map,
lowest resolution first) and **low = stride 8** (``s3``, the last level) — "H2L1" in
Lite-DETR's naming, the stride-64 scale Mask2Former does not have being the missing "H".

Exits (Lite-ECO-M2F, ECO-M2F's supplementary "Impact of backbone size on Lite-M2F"): the
potential exits are layers 2..K-1 (2..5), **followed by the last layer K**, which is kept for
every image and never an exit of its own ("it leverages features from all scales ... making it
essential"): an image leaving after high-level layer k runs the all-scale layer next, then the
decoder (the run's ``tail``, :class:`~adaseg.models.adaptive.run.AdaptiveRun`), so it costs k
high-level layers + 1 all-scale layer, and exit K-1 is the full model. Any exit 1..K-1 is
allowed; exit K is the plain loop through all K layers (the same computation as exit K-1).
``keep_last_layer = False`` turns the tail off (an exit then hands the decoder stride-8
tokens no layer updated): only for tests that look at one layer at a time.

Pausing: the run's active set holds tokens of every scale; a high-level layer updates the
active high-level tokens and leaves the active low-level ones as they are (so a paused token
is one that no later layer updates); paused tokens of both kinds still serve as values. Parameter names differ from the deformable
encoder's (``high_layers``/``all_layer`` instead of ``encoder.layers``) so that a checkpoint of
one kind never loads silently into the other.
"""

from __future__ import annotations

import torch
from torch import nn

from adaseg.models.adaptive.run import AdaptiveRun, RunResult
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.mask2former.encoder import DeformableEncoderLayer


def high_level_count(positions: torch.Tensor, n_high: int) -> tuple[int, torch.Tensor | None]:
    """How many active tokens a high-level layer takes as queries, once the active set changed.

    Args:
        positions: (b, n) int64 row of each active token in the full map, ascending (as the
            run keeps them), so each image's high-level tokens (rows < ``n_high``: the map is
            lowest resolution first) are a prefix of its active tokens.

    Returns:
        ``(m, valid)``: the longest such prefix m over the images, and valid (b, m) bool,
        False where an image has fewer than m high-level tokens (those slots hold low-level
        tokens whose update is discarded), or None when no image has fewer.
    """
    counts = (positions < n_high).sum(1)
    # ONE host read per pause stage, never per layer: the query count is a shape, and it is
    # what makes paused high-level tokens cost nothing
    fewest, m = torch.stack((counts.min(), counts.max())).tolist()
    valid = torch.arange(m, device=positions.device)[None] < counts[:, None]
    return m, (None if fewest == m else valid)


def high_level_valid(positions: torch.Tensor, n_high: int, m: int) -> torch.Tensor:
    """(b, m) bool, as :func:`high_level_count`'s ``valid`` for a known bound ``m``, without a
    host read: used when only images left the run (exits), whose remaining images' active
    sets, and so their high-level counts (each <= m), did not change."""
    counts = (positions < n_high).sum(1)
    return torch.arange(m, device=positions.device)[None] < counts[:, None]


class LiteDeformableEncoder(nn.Module):
    """K deformable layers, interleaved as Lite-DETR's "(K-1 high + 1 all) x 1".

    Same arguments as :class:`~adaseg.models.mask2former.encoder.AdaptiveDeformableEncoder`,
    plus ``low_levels``: how many of the finest levels are low-level (1: stride 8).
    """

    def __init__(self, *, d_model: int, d_ffn: int, num_layers: int, n_levels: int, n_heads: int, n_points: int,
                 dropout: float, num_classes: int, low_levels: int = 1):
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"a Lite encoder needs at least 2 layers (high-level ones, then one over all), "
                             f"got num_layers={num_layers}")
        if not 1 <= low_levels < n_levels:
            raise ValueError(f"low_levels must be in 1..{n_levels - 1}, got {low_levels}")
        self.num_layers = num_layers
        self.keep_last_layer = True  # Lite-ECO-M2F: every exit before K runs layer K next
        self.n_levels = n_levels
        self.low_levels = low_levels
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))

        def layer():
            return DeformableEncoderLayer(d_model=d_model, d_ffn=d_ffn, n_levels=n_levels, n_heads=n_heads,
                                          n_points=n_points, dropout=dropout)

        self.high_layers = nn.ModuleList(layer() for _ in range(num_layers - 1))
        self.all_layer = layer()
        self.aux_decoders = nn.ModuleList(nn.Linear(d_model, num_classes) for _ in range(num_layers - 1))
        for p in [*self.high_layers.parameters(), *self.all_layer.parameters()]:
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for lyr in [*self.high_layers, self.all_layer]:
            lyr.self_attn.reset_parameters()
        nn.init.normal_(self.level_embed)

    def updated_levels(self, layer_no: int) -> tuple[int, ...]:
        """The levels (0 = lowest resolution) whose tokens layer ``layer_no`` updates."""
        if layer_no == self.num_layers:
            return tuple(range(self.n_levels))
        return tuple(range(self.n_levels - self.low_levels))

    def forward(self, src: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor, padding_mask: torch.Tensor | None,
                *, settings: AdaptiveSettings, exit_plan: torch.Tensor | None, keep_aux: bool) -> RunResult:
        """Same contract as :meth:`AdaptiveDeformableEncoder.forward` ((B, S, C) tokens of all
        levels, lowest resolution first, -> the run's :class:`RunResult`)."""
        # one host read per forward (not per layer): where the low-level tokens start
        n_high = int(level_start_index[self.n_levels - self.low_levels])

        def kept_last_layer(finished):  # the all-scale layer on images leaving before it
            return self.all_layer(finished.tokens, finished.tracked["pos"], finished.tracked["ref"], finished.full,
                                  spatial_shapes, level_start_index, finished.padding)

        tail = kept_last_layer if self.keep_last_layer else None
        run = AdaptiveRun(src, settings=settings, exit_plan=exit_plan, aux_decoders=self.aux_decoders,
                          padding=padding_mask, keep_aux=keep_aux, paused_are_values=True, tail=tail,
                          tail_layer=None if tail is None else self.num_layers)
        run.track(pos=pos, ref=reference_points)
        m, valid, counted_for, counted_n = n_high, None, None, None
        for layer_no in run.layers():
            tokens = run.tokens
            args = (run.full_map(), spatial_shapes, level_start_index, run.padding)
            if layer_no == self.num_layers:
                run.step(self.all_layer(tokens, run.tracked("pos"), run.tracked("ref"), *args))
                continue
            if run.positions is not None and run.positions is not counted_for:
                if run.positions.shape[1] == counted_n:
                    # as many active tokens as at the last count: no token paused since, only
                    # images exited; m still bounds every remaining image (no host read)
                    valid = None if valid is None else high_level_valid(run.positions, n_high, m)
                else:  # tokens paused: count each image's active high-level tokens again
                    m, valid = high_level_count(run.positions, n_high)
                counted_for, counted_n = run.positions, run.positions.shape[1]
            if m == 0:  # every high-level token of every running image is paused: nothing to update
                run.step(tokens)
                continue
            updated = self.high_layers[layer_no - 1](tokens[:, :m], run.tracked("pos")[:, :m],
                                                     run.tracked("ref")[:, :m], *args)
            if valid is not None:
                updated = torch.where(valid[..., None], updated, tokens[:, :m])
            run.step(torch.cat((updated, tokens[:, m:]), 1))
        return run.finish()
