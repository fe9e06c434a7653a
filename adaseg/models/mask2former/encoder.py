"""The adaptive multi-scale deformable-attention encoder (ECO-M2F exits + PAUMER pausing).

Tokens of all levels live in one (B, S, C) map; the loop over layers is an
:class:`~adaseg.models.adaptive.run.AdaptiveRun` (exits, pausing, the one buffer). Paused
tokens stay in the run's buffer with their features, so they still serve as
deformable-attention values; the run writes the updated tokens back in place before each
layer reads the map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adaseg.models.adaptive.run import AdaptiveRun, RunResult
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.nn import MSDeformAttn


class DeformableEncoderLayer(nn.Module):
    """Post-norm deformable self-attention + FFN (Mask2Former's encoder layer; same names).

    forward(tokens (N, n, C), pos (N, n, C), reference_points (N, n, L, 2), values (N, S, C),
    spatial_shapes, level_start_index, padding_mask (N, S) | None) -> (N, n, C): the n query
    tokens updated; ``values`` holds all S tokens (active and paused).
    """

    def __init__(self, *, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int, dropout: float):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model=d_model, n_levels=n_levels, n_heads=n_heads, n_points=n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, tokens, pos, reference_points, values, spatial_shapes, level_start_index, padding_mask):
        query = tokens + pos
        device_type = query.device.type
        if torch.is_autocast_enabled(device_type):
            # As Mask2Former does under AMP, deformable attention runs in float32: the compiled
            # op needs value, locations and weights in one dtype, and locations need the bits.
            with torch.autocast(device_type, enabled=False):
                attn = self.self_attn(
                    query.float(), reference_points.float(), values.float(), spatial_shapes, level_start_index, padding_mask
                )
        else:
            attn = self.self_attn(query, reference_points, values, spatial_shapes, level_start_index, padding_mask)
        x = self.norm1(tokens + self.dropout1(attn))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(x))))
        return self.norm2(x + self.dropout3(ffn))


class _LayerStack(nn.Module):
    """Holds ``layers`` so parameter names read ``encoder.layers.N`` as in Mask2Former."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)


class AdaptiveDeformableEncoder(nn.Module):
    """K deformable encoder layers with level embeddings and per-layer auxiliary decoders.

    Args:
        d_model: token channels C.
        d_ffn: FFN hidden size.
        num_layers: K.
        n_levels: feature levels L (3 in Mask2Former).
        n_heads, n_points: deformable attention heads and points.
        dropout: dropout in the layers (0 at our scale).
        num_classes: semantic classes of the 1x1 auxiliary decoders (one per layer 1..K-1).
    """

    def __init__(
        self,
        *,
        d_model: int,
        d_ffn: int,
        num_layers: int,
        n_levels: int,
        n_heads: int,
        n_points: int,
        dropout: float,
        num_classes: int,
    ):
        super().__init__()
        self.num_layers = num_layers
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        self.encoder = _LayerStack(
            [
                DeformableEncoderLayer(
                    d_model=d_model, d_ffn=d_ffn, n_levels=n_levels, n_heads=n_heads, n_points=n_points, dropout=dropout
                )
                for _ in range(num_layers)
            ]
        )
        # aux_decoders[l-1] decodes the tokens after layer l (pausing after the last layer is moot)
        self.aux_decoders = nn.ModuleList(nn.Linear(d_model, num_classes) for _ in range(num_layers - 1))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.encoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for layer in self.encoder.layers:
            layer.self_attn.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        padding_mask: torch.Tensor | None,
        *,
        settings: AdaptiveSettings,
        exit_plan: torch.Tensor | None,
        keep_aux: bool,
    ) -> RunResult:
        """
        Args:
            src: (B, S, C) input tokens of all levels (lowest resolution first).
            pos: (B, S, C) positional + level embeddings.
            reference_points: (B, S, L, 2) normalised (x, y) per level.
            spatial_shapes: (L, 2) int64; level_start_index: (L,) int64.
            padding_mask: (B, S) bool True on padding, or None.
            settings: pause plan, mode, generator, recorded exits.
            exit_plan: (B,) int64 exit layer per image (1..K), or None with recorded exits.
            keep_aux: keep auxiliary-decoder logits (with gradient) at pause stages.

        Returns:
            the run's :class:`RunResult` over the (B, S, C) token map.
        """
        run = AdaptiveRun(src, settings=settings, exit_plan=exit_plan, aux_decoders=self.aux_decoders,
                          padding=padding_mask, keep_aux=keep_aux, paused_are_values=True)
        run.track(pos=pos, ref=reference_points)
        for layer_no in run.layers():
            # Paused tokens are not updated but still serve as values: the layer reads the
            # run's full map (written in place) and updates the active tokens only.
            layer = self.encoder.layers[layer_no - 1]
            run.step(layer(run.tokens, run.tracked("pos"), run.tracked("ref"), run.full_map(), spatial_shapes,
                           level_start_index, run.padding))
        return run.finish()
