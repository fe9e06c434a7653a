"""RT-M2F's encoder: RT-DETR's hybrid encoder (AIFI + CCFM) on the adaptive run.

RT-DETR (arXiv 2304.08069) replaces the multi-scale deformable encoder with two cheap parts:
**AIFI**, one post-norm transformer layer (self-attention + GELU FFN) over the coarsest map
only, and **CCFM**, a CNN that fuses the scales top-down then bottom-up (PAN-like), each
fusion a CSP block of RepVGG blocks over the concatenation of the two maps. Defaults as
RT-DETR's R-50 model, already at d 256: 8 heads, FFN 1024, dropout 0, one AIFI layer on the
stride-32 map, CSP blocks of 3 RepVGG blocks with expansion 1.0, SiLU. One change: RT-DETR's
BatchNorm becomes Mask2Former's padding-aware GroupNorm (``MaskedGroupNorm``), as in the rest
of the pixel decoder, so that an image's result does not depend on its batch-mates (mixed-exit
batches equal per-image runs in training too) and a batch of one trains.

On the adaptive run, with L levels (lowest resolution first) the encoder is 2L-1 "layers",
each one step of RT-DETR's computation that rewrites some levels of the token map:

====  ==========================================  ============================
layer  step                                        levels rewritten (L = 3)
====  ==========================================  ============================
1      AIFI on level 0 (stride 32)                 0
2..L   top-down: lateral 1x1 on level i-2, then    i-2 (lateral), i-1 (fused)
       CSP(concat(upsample, level i-1))
L+1..  bottom-up: CSP(concat(3x3 stride-2 conv of  the coarser level
2L-1   the finer level, the coarser level))
====  ==========================================  ============================

The natural exit plan is therefore (L, 2L-1) = **(3, 5)**: after the top-down path (an FPN's
output: every level fused from above) and after the full CCFM; exits 1, 2 and 4 are allowed
(any layer is an exit) but hand the decoder half-fused maps.

**No pausing.** A pause takes effect after layer 1 at the earliest, and layer 1 is the only
attention layer (AIFI); layers 2-5 are convolutions over whole maps, which compute every
paused token anyway (the run only drops its new value). Pausing would change results and save
no compute, so a model with this encoder refuses every pause plan, naming why
(``Mask2Former.pause_refusal`` from
:data:`~adaseg.models.mask2former.encoder_kinds.PAUSE_REFUSALS`; ``forward``, ``eval``,
``sweep``, ``predict`` and the pausing ``train-parent`` recipes refuse before any work). The
loop below still follows the run's contract when :meth:`HybridEncoder.forward` is called
directly with a pause plan (paused tokens never rewritten, still read by the convolutions and
as AIFI's keys/values); nothing in adaseg calls it so.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from adaseg.models.adaptive.run import AdaptiveRun, RunResult
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.mask2former.masked_ops import MaskedGroupNorm


class ConvNormAct(nn.Module):
    """Conv (no bias) + padding-aware GroupNorm + optional SiLU (RT-DETR's ``ConvNormLayer``).

    forward(x (B, Cin, H, W), mask_in (B, H, W) | None, mask_out (B, H', W') | None) ->
    (B, Cout, H', W'); padded inputs are zeroed first for kernels larger than 1.
    """

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int, stride: int = 1, act: bool,
                 groups: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                              bias=False)
        self.norm = MaskedGroupNorm(groups, out_channels)
        self.act = act

    def forward(self, x, mask_in=None, mask_out=None):
        if mask_in is not None and self.conv.kernel_size[0] > 1:
            x = x.masked_fill(mask_in[:, None], 0.0)
        y = self.norm(self.conv(x), mask_out)
        return F.silu(y) if self.act else y


class RepVggBlock(nn.Module):
    """SiLU(conv3x3-norm(x) + conv1x1-norm(x)) (the training-time RepVGG form)."""

    def __init__(self, channels: int, *, groups: int):
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, kernel_size=3, act=False, groups=groups)
        self.conv2 = ConvNormAct(channels, channels, kernel_size=1, act=False, groups=groups)

    def forward(self, x, mask=None):
        return F.silu(self.conv1(x, mask, mask) + self.conv2(x, mask, mask))


class CSPRepLayer(nn.Module):
    """RT-DETR's fusion block: conv3(blocks(conv1(x)) + conv2(x)); conv3 is the identity at
    expansion 1.0 (hidden == out channels), so it has no parameters then."""

    def __init__(self, in_channels: int, out_channels: int, *, blocks: int, expansion: float, groups: int):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvNormAct(in_channels, hidden, kernel_size=1, act=True, groups=groups)
        self.conv2 = ConvNormAct(in_channels, hidden, kernel_size=1, act=True, groups=groups)
        self.bottlenecks = nn.ModuleList(RepVggBlock(hidden, groups=groups) for _ in range(blocks))
        self.conv3 = (ConvNormAct(hidden, out_channels, kernel_size=1, act=True, groups=groups)
                      if hidden != out_channels else None)

    def forward(self, x, mask=None):
        y = self.conv1(x, mask, mask)
        for block in self.bottlenecks:
            y = block(y, mask)
        y = y + self.conv2(x, mask, mask)
        return y if self.conv3 is None else self.conv3(y, mask, mask)


class AIFILayer(nn.Module):
    """Post-norm transformer layer (RT-DETR's ``TransformerEncoderLayer``): q = k = x + pos, v = x.

    forward(x (B, n, C), pos (B, n, C), key_padding (B, n) bool | None) -> (B, n, C). The
    attention is written as two matmuls so FLOP counting sees exactly what runs.
    """

    def __init__(self, *, d_model: int, n_heads: int, d_ffn: int, dropout: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, pos, key_padding=None):
        b, n, c = x.shape
        h = self.n_heads

        def heads(t):
            return t.view(b, n, h, c // h).transpose(1, 2)  # (B, h, n, c/h)

        q, k, v = heads(self.q_proj(x + pos)), heads(self.k_proj(x + pos)), heads(self.v_proj(x))
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(c // h))
        if key_padding is not None:
            scores = scores.masked_fill(key_padding[:, None, None], float("-inf"))
        attn = (self.dropout(scores.softmax(-1)) @ v).transpose(1, 2).reshape(b, n, c)
        x = self.norm1(x + self.dropout(self.out_proj(attn)))
        return self.norm2(x + self.dropout(self.linear2(self.dropout(F.gelu(self.linear1(x))))))


class HybridEncoder(nn.Module):
    """RT-DETR's hybrid encoder as 2L-1 adaptive layers (see the module docstring).

    Args:
        d_model: token channels C; d_ffn, n_heads, dropout: AIFI's.
        num_layers: must be 2 * n_levels - 1 (5 for Mask2Former's three levels).
        n_levels: L.
        num_classes: classes of the per-layer auxiliary (pausing) decoders.
        norm_groups: GroupNorm groups.
        csp_blocks, expansion: RepVGG blocks per CSP block and its hidden width factor.
    """

    def __init__(self, *, d_model: int, d_ffn: int, num_layers: int, n_levels: int, n_heads: int, dropout: float,
                 num_classes: int, norm_groups: int, csp_blocks: int = 3, expansion: float = 1.0):
        super().__init__()
        if n_levels < 2 or num_layers != 2 * n_levels - 1:
            raise ValueError(f"the rt encoder over {n_levels} levels has 2*{n_levels}-1 = {2 * n_levels - 1} layers "
                             f"(AIFI, {n_levels - 1} top-down and {n_levels - 1} bottom-up fusions), "
                             f"got num_layers={num_layers}")
        self.num_layers = num_layers
        self.n_levels = n_levels
        # RT-DETR has no level embedding: AIFI sees one level, the convolutions none
        self.register_parameter("level_embed", None)
        self.aifi = AIFILayer(d_model=d_model, n_heads=n_heads, d_ffn=d_ffn, dropout=dropout)
        fusions = n_levels - 1
        g = norm_groups

        def csp():
            return CSPRepLayer(2 * d_model, d_model, blocks=csp_blocks, expansion=expansion, groups=g)

        self.lateral_convs = nn.ModuleList(ConvNormAct(d_model, d_model, kernel_size=1, act=True, groups=g)
                                           for _ in range(fusions))
        self.fpn_blocks = nn.ModuleList(csp() for _ in range(fusions))
        self.downsample_convs = nn.ModuleList(ConvNormAct(d_model, d_model, kernel_size=3, stride=2, act=True, groups=g)
                                              for _ in range(fusions))
        self.pan_blocks = nn.ModuleList(csp() for _ in range(fusions))
        self.aux_decoders = nn.ModuleList(nn.Linear(d_model, num_classes) for _ in range(num_layers - 1))

    def updated_levels(self, layer_no: int) -> tuple[int, ...]:
        """The levels (0 = lowest resolution) whose tokens layer ``layer_no`` rewrites."""
        if layer_no == 1:
            return (0,)
        if layer_no <= self.n_levels:
            return (layer_no - 2, layer_no - 1)
        return (2 * self.n_levels - layer_no - 1,)

    def _stage(self, layer_no: int, maps: list[torch.Tensor], masks: list, pos0: torch.Tensor,
               pad0: torch.Tensor | None) -> dict[int, torch.Tensor]:
        """{level: its new (b, C, h, w) map} after layer ``layer_no``, from the current maps."""
        big = self.n_levels
        if layer_no == 1:
            b, c, h, w = maps[0].shape
            y = self.aifi(maps[0].flatten(2).transpose(1, 2), pos0, pad0)
            return {0: y.transpose(1, 2).reshape(b, c, h, w)}
        if layer_no <= big:  # top-down into level i = layer_no - 1 from the (already fused) level i-1
            i = layer_no - 1
            high = self.lateral_convs[i - 1](maps[i - 1], masks[i - 1], masks[i - 1])
            up = F.interpolate(high, size=maps[i].shape[-2:], mode="nearest")
            return {i - 1: high, i: self.fpn_blocks[i - 1](torch.cat((up, maps[i]), 1), masks[i])}
        j = layer_no - big  # bottom-up step j = 1..L-1: level L-1-j from level L-j
        lo, hi = big - j, big - 1 - j
        down = self.downsample_convs[j - 1](maps[lo], masks[lo], masks[hi])
        if down.shape[-2:] != maps[hi].shape[-2:]:  # sizes that do not halve exactly
            down = F.interpolate(down, size=maps[hi].shape[-2:], mode="nearest")
        return {hi: self.pan_blocks[j - 1](torch.cat((down, maps[hi]), 1), masks[hi])}

    def forward(self, src: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor, padding_mask: torch.Tensor | None,
                *, settings: AdaptiveSettings, exit_plan: torch.Tensor | None, keep_aux: bool) -> RunResult:
        """Same contract as :meth:`AdaptiveDeformableEncoder.forward`; ``reference_points``
        are not used (no deformable sampling), ``pos`` only at level 0 (AIFI)."""
        shapes = [tuple(s) for s in spatial_shapes.tolist()]  # one host read per forward
        sizes = [h * w for h, w in shapes]
        run = AdaptiveRun(src, settings=settings, exit_plan=exit_plan, aux_decoders=self.aux_decoders,
                          padding=padding_mask, keep_aux=keep_aux, paused_are_values=True)
        pos0 = pos[:, : sizes[0]]  # (B, n0, C) AIFI's positions, all level-0 tokens (active or paused)
        for layer_no in run.layers():
            full = run.full_map()  # (b, S, C): paused tokens with their features, active ones current
            b, _, c = full.shape
            parts = list(full.split(sizes, 1))
            maps = [p.transpose(1, 2).reshape(b, c, h, w) for p, (h, w) in zip(parts, shapes)]
            pad = None if run.padding is None else list(run.padding.split(sizes, 1))
            masks = [None] * self.n_levels if pad is None else [m.view(b, h, w) for m, (h, w) in zip(pad, shapes)]
            new = self._stage(layer_no, maps, masks, pos0.index_select(0, run.rows), None if pad is None else pad[0])
            for lvl, y in new.items():
                parts[lvl] = y.flatten(2).transpose(1, 2)
            out = torch.cat(parts, 1)
            # only the active tokens take their new values; paused ones are never rewritten
            run.step(out if run.positions is None else torch.gather(out, 1, run.positions[..., None].expand(-1, -1, c)))
        return run.finish()
