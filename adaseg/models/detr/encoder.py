"""DETR's encoder as an adaptive encoder: 6 post-norm self-attention layers over one
single-scale token map, run as an :class:`~adaseg.models.adaptive.run.AdaptiveRun` loop.

Exits (ECO-M2F): an image leaves after its exit layer; later layers run on the others only.
Pausing (PAUMER): after layer l, ``aux_decoders[l - 1]`` (1x1 linear, K classes + background)
scores the active tokens; the paused ones leave self-attention, as in the ViT: later layers
neither update them nor attend to them (DETR's encoder is global attention, so a token that
no longer attends would otherwise still be read as a key by every other token, and pausing
would save nothing in the attention). The decoder reads the full map: paused tokens come back
with the features they paused with.
"""

from __future__ import annotations

import torch
from torch import nn

from adaseg.models.adaptive.run import AdaptiveRun, RunResult
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.detr.layers import EncoderLayer


class AdaptiveDetrEncoder(nn.Module):
    """K encoder layers and their auxiliary decoders.

    Args:
        dim, heads, ffn, dropout: layer sizes (DETR: 256, 8, 2048, 0.1).
        num_layers: K (6).
        num_classes: K_cls; the auxiliary decoders predict K_cls + 1 (the last: no box).
    """

    def __init__(self, *, dim: int, heads: int, ffn: int, dropout: float, num_layers: int, num_classes: int):
        super().__init__()
        self.num_layers = num_layers
        self.layers = nn.ModuleList(EncoderLayer(dim=dim, heads=heads, ffn=ffn, dropout=dropout)
                                    for _ in range(num_layers))
        # aux_decoders[l-1] decodes the tokens after layer l (pausing after the last layer is moot)
        self.aux_decoders = nn.ModuleList(nn.Linear(dim, num_classes + 1) for _ in range(num_layers - 1))

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, padding: torch.Tensor | None, *,
                settings: AdaptiveSettings, exit_plan: torch.Tensor | None, keep_aux: bool) -> RunResult:
        """
        Args:
            tokens: (B, N, D) projected backbone tokens; pos: (B, N, D) sine positions.
            padding: (B, N) bool True on padding tokens, or None.
            settings, exit_plan, keep_aux: as :meth:`AdaptiveModelBase.encode`.

        Returns:
            the run's :class:`RunResult` over the (B, N, D) token map.
        """
        run = AdaptiveRun(tokens, settings=settings, exit_plan=exit_plan, aux_decoders=self.aux_decoders,
                          padding=padding, keep_aux=keep_aux, paused_are_values=False)
        run.track(pos=pos)
        for layer_no in run.layers():
            pad = run.active_padding
            run.step(self.layers[layer_no - 1](run.tokens, run.tracked("pos"), None if pad is None else ~pad))
        return run.finish()
