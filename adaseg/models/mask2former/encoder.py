"""The adaptive multi-scale deformable-attention encoder (ECO-M2F exits + PAUMER pausing).

Tokens of all levels live in one (B, S, C) buffer. Each layer updates only the *active*
tokens of the *active* images:

* exits: after layer k the images whose exit is k are written to the output and dropped from
  the batch (the batch dimension shrinks), so compute follows the exit plan;
* pausing: after a pause layer, a fraction of the active tokens (lowest auxiliary-decoder
  entropy, or random ones) stops being updated. Paused tokens stay in the buffer with their
  features, so they still serve as deformable-attention values; updated tokens are written
  back in place after every layer (the PAUMER assembler), so the buffer is always the
  assembled token map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from adaseg.models.adaptive import PausePlan
from adaseg.models.pause_selection import AuxRecord, check_pause_mode, select_pause
from adaseg.nn import MSDeformAttn
from adaseg.ops import pausing


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


@dataclass
class EncoderResult:
    """``tokens``: (B, S, C) each image's assembled tokens at its exit (None with all_exits);
    ``per_exit``: {k: (B, S, C)} with all_exits; ``aux``: auxiliary-decoder records (training);
    ``paused``: per pause stage, (rows (b,), paused token positions (b, m)) for inspection."""

    tokens: torch.Tensor | None
    per_exit: dict[int, torch.Tensor] = field(default_factory=dict)
    aux: list[AuxRecord] = field(default_factory=list)
    paused: list[tuple[int, torch.Tensor, torch.Tensor]] = field(default_factory=list)


def _gather_rows(x: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
    return None if x is None else x.index_select(0, idx)


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
        exits: torch.Tensor,
        pause: PausePlan | None,
        pause_mode: str,
        all_exits: tuple[int, ...] | None,
        collect_aux: bool,
        generator: torch.Generator | None = None,
    ) -> EncoderResult:
        """
        Args:
            src: (B, S, C) input tokens of all levels (lowest resolution first).
            pos: (B, S, C) positional + level embeddings.
            reference_points: (B, S, L, 2) normalised (x, y) per level.
            spatial_shapes: (L, 2) int64; level_start_index: (L,) int64.
            padding_mask: (B, S) bool True on padding, or None.
            exits: (B,) int64 exit layer per image (1..K).
            pause: pause plan or None.
            pause_mode: "entropy" (PAUMER) or "random" (its baseline).
            all_exits: record the assembled tokens after each of these layers (all images run
                to the deepest one), or None.
            collect_aux: keep auxiliary-decoder logits (with gradient) at pause stages.
            generator: RNG for ``pause_mode="random"`` (None: torch's global RNG).
        """
        check_pause_mode(pause_mode)
        if pause is not None:
            pause.check_depth(self.num_layers)
        b, s, c = src.shape
        depth = int(exits.max()) if all_exits is None else max(all_exits)
        result = EncoderResult(tokens=None)

        rows = torch.arange(b, device=src.device)  # batch index of each active image
        buf, active = src, src  # assembled tokens / active tokens of the active images
        token_idx: torch.Tensor | None = None  # (b, n) positions of active tokens; None = all
        pos_r, ref_r, mask_r, exits_r = pos, reference_points, padding_mask, exits
        q_pos, q_ref = pos, reference_points  # positions / reference points of the active tokens
        done_rows: list[torch.Tensor] = []
        done_tokens: list[torch.Tensor] = []

        for layer_no in range(1, depth + 1):
            if all_exits is None:
                stay = exits_r >= layer_no
                if not bool(stay.all()):
                    keep = stay.nonzero().squeeze(1)
                    rows, buf, active, exits_r = rows[keep], buf[keep], active[keep], exits_r[keep]
                    pos_r, ref_r, mask_r = pos_r[keep], ref_r[keep], _gather_rows(mask_r, keep)
                    q_pos, q_ref = q_pos[keep], q_ref[keep]
                    token_idx = None if token_idx is None else token_idx[keep]
            layer = self.encoder.layers[layer_no - 1]
            active = layer(active, q_pos, q_ref, buf, spatial_shapes, level_start_index, mask_r)
            buf = active if token_idx is None else pausing.assemble(buf, token_idx, active)

            if all_exits is None:
                leaving = exits_r == layer_no
                if bool(leaving.any()):
                    done_rows.append(rows[leaving])
                    done_tokens.append(buf[leaving])
            elif layer_no in all_exits:
                result.per_exit[layer_no] = buf

            ratio = None if pause is None else pause.ratio_after(layer_no)
            if ratio is not None and layer_no < depth:
                active, token_idx = self._pause(
                    layer_no, ratio, active, token_idx, rows, mask_r, pause_mode, collect_aux, generator, result
                )
                # gathered once per pause stage, not once per layer
                q_pos = pausing.gather_tokens(pos_r, token_idx)
                q_ref = pausing.gather_tokens(ref_r.flatten(2), token_idx).view(*token_idx.shape, *ref_r.shape[2:])

        if all_exits is None:
            order = torch.cat(done_rows)
            tokens = torch.cat(done_tokens)
            result.tokens = tokens.new_zeros(b, s, c).index_copy(0, order, tokens)
        return result

    def _pause(self, layer_no, ratio, active, token_idx, rows, mask_r, pause_mode, collect_aux, generator, result):
        """Pause ``ratio`` of the active tokens; returns the kept tokens and their positions."""
        sel = select_pause(
            layer=layer_no,
            ratio=ratio,
            tokens=active,
            positions=token_idx,
            rows=rows,
            decoder=self.aux_decoders[layer_no - 1],
            pause_mode=pause_mode,
            padding=mask_r,
            collect_aux=collect_aux,
            generator=generator,
        )
        if sel.aux is not None:
            result.aux.append(sel.aux)
        result.paused.append((layer_no, rows, sel.paused_at))
        return sel.kept, sel.kept_at
