"""Mask2Former's multi-scale pixel decoder around an adaptive encoder of any registered kind.

Input projections (1x1 conv + GroupNorm) of the three lowest-resolution backbone levels,
sine positions + level embeddings, the adaptive encoder (``deform``: Mask2Former's deformable
layers; ``lite``: Lite-DETR's interleaved layers; ``rt``: RT-DETR's AIFI + CCFM, which has no
level embedding; see :mod:`~adaseg.models.mask2former.encoder_kinds`), then an FPN lateral path
from the stride-8 encoder output to the stride-4 mask features, the same for every kind. Names
follow Mask2Former's ``MSDeformAttnPixelDecoder`` (``input_proj``, ``transformer.level_embed``,
``transformer.encoder.layers``, ``adapter_1``, ``layer_1``, ``mask_features``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adaseg.models.adaptive.run import RunResult
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.adaptive.gate import pool_features
from adaseg.models.mask2former.encoder_kinds import build_encoder
from adaseg.models.mask2former.masked_ops import ConvNorm, MaskedGroupNorm, level_mask, replicate_padding
from adaseg.models.mask2former.position import sine_position

# backbone keys, lowest resolution first: s1 (stride 32), s2 (16), s3 (8) feed the encoder
ENCODER_LEVELS = ("s1", "s2", "s3")


@dataclass
class PixelDecoderInput:
    """What the encoder needs, prepared once per batch (shared by every exit).

    ``src``/``pos``: (B, S, C); ``reference_points``: (B, S, L, 2); ``spatial_shapes``: (L, 2);
    ``level_start_index``: (L,); ``token_mask``: (B, S) bool | None; ``level_masks``: L x
    (B, h, w) | None; ``gate_features``: (B, C) pooled lowest-resolution tokens.
    """

    src: torch.Tensor
    pos: torch.Tensor
    reference_points: torch.Tensor
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    token_mask: torch.Tensor | None
    level_masks: list | None
    gate_features: torch.Tensor


def reference_points(spatial_shapes: list[tuple[int, int]], valid_ratios: torch.Tensor) -> torch.Tensor:
    """Deformable-DETR encoder reference points: every token's pixel centre, normalised by
    its image's valid extent and mapped onto every level.

    Args:
        spatial_shapes: L x (H_l, W_l); valid_ratios: (B, L, 2) (valid W / W, valid H / H).

    Returns:
        (B, S, L, 2) (x, y) in [0, 1] of the padded maps.
    """
    points = []
    for lvl, (h, w) in enumerate(spatial_shapes):
        ys = (torch.arange(h, dtype=torch.float32, device=valid_ratios.device) + 0.5)
        xs = (torch.arange(w, dtype=torch.float32, device=valid_ratios.device) + 0.5)
        ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
        ref_y = ref_y.reshape(1, -1) / (valid_ratios[:, None, lvl, 1] * h)
        ref_x = ref_x.reshape(1, -1) / (valid_ratios[:, None, lvl, 0] * w)
        points.append(torch.stack((ref_x, ref_y), -1))
    ref = torch.cat(points, 1)
    return ref[:, :, None] * valid_ratios[:, None]


def valid_ratios(mask: torch.Tensor | None, size: tuple[int, int], batch: int, device) -> torch.Tensor:
    """(B, 2) fraction of valid width and height of a level (ones without padding)."""
    if mask is None:
        return torch.ones(batch, 2, device=device)
    h, w = size
    valid_h = (~mask[:, :, 0]).sum(1).to(torch.float32)
    valid_w = (~mask[:, 0, :]).sum(1).to(torch.float32)
    return torch.stack((valid_w / w, valid_h / h), -1)


class MSDeformAttnPixelDecoder(nn.Module):
    """Pixel decoder with an adaptive encoder of any registered kind.

    Args:
        in_channels: backbone channels by key ("s1".."s4").
        conv_dim: token channels C of the encoder.
        mask_dim: channels of the mask features.
        num_layers, n_heads, n_points, dim_feedforward, dropout: encoder settings.
        num_classes: semantic classes of the auxiliary (pausing) decoders.
        norm_groups: GroupNorm groups (32 in Mask2Former).
        encoder: the encoder kind (``deform``, ``lite``, ``rt``; see
            :mod:`~adaseg.models.mask2former.encoder_kinds`); ``n_points`` is None for ``rt``.
    """

    def __init__(
        self,
        *,
        in_channels: dict[str, int],
        conv_dim: int,
        mask_dim: int,
        num_layers: int,
        n_heads: int,
        n_points: int | None,
        dim_feedforward: int,
        dropout: float,
        num_classes: int,
        norm_groups: int,
        encoder: str = "deform",
    ):
        super().__init__()
        missing = [k for k in (*ENCODER_LEVELS, "s4") if k not in in_channels]
        if missing:
            raise ValueError(f"backbone channels lack {missing}; got {sorted(in_channels)}")
        self.conv_dim = conv_dim
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels[k], conv_dim, kernel_size=1), MaskedGroupNorm(norm_groups, conv_dim))
            for k in ENCODER_LEVELS
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        self.encoder_kind = encoder
        self.transformer = build_encoder(
            encoder,
            d_model=conv_dim,
            d_ffn=dim_feedforward,
            num_layers=num_layers,
            n_levels=len(ENCODER_LEVELS),
            n_heads=n_heads,
            n_points=n_points,
            dropout=dropout,
            num_classes=num_classes,
            norm_groups=norm_groups,
        )
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.constant_(self.mask_features.bias, 0)
        self.adapter_1 = ConvNorm(
            in_channels=in_channels["s4"], out_channels=conv_dim, kernel_size=1, groups=norm_groups, relu=False
        )
        self.layer_1 = ConvNorm(in_channels=conv_dim, out_channels=conv_dim, kernel_size=3, groups=norm_groups, relu=True)

    @property
    def num_layers(self) -> int:
        return self.transformer.num_layers

    def prepare(self, features: dict[str, torch.Tensor], mask: torch.Tensor | None) -> PixelDecoderInput:
        """Project, position and flatten the encoder levels.

        Args:
            features: backbone maps by key, (B, C_k, H_k, W_k).
            mask: (B, H, W) bool image padding mask or None.
        """
        srcs, poss, masks, shapes = [], [], [], []
        gate_features = None
        for lvl, key in enumerate(ENCODER_LEVELS):
            x = features[key]
            b, _, h, w = x.shape
            m = level_mask(mask, (h, w))
            conv, norm = self.input_proj[lvl]
            y = norm(conv(x), m)
            if lvl == 0:
                gate_features = pool_features(y, m)
            pos_mask = m if m is not None else torch.zeros(b, h, w, dtype=torch.bool, device=x.device)
            pos = sine_position(pos_mask, self.conv_dim).to(y.dtype)
            srcs.append(y.flatten(2).transpose(1, 2))
            pos = pos.flatten(2).transpose(1, 2)
            if self.transformer.level_embed is not None:  # the rt encoder has none
                pos = pos + self.transformer.level_embed[lvl].view(1, 1, -1)
            poss.append(pos)
            masks.append(m)
            shapes.append((h, w))
        device = srcs[0].device
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=device)
        sizes = spatial_shapes.prod(1)
        level_start_index = torch.cat((sizes.new_zeros(1), sizes.cumsum(0)[:-1]))
        ratios = torch.stack([valid_ratios(m, hw, srcs[0].shape[0], device) for m, hw in zip(masks, shapes)], 1)
        token_mask = None if mask is None else torch.cat([m.flatten(1) for m in masks], 1)
        return PixelDecoderInput(
            src=torch.cat(srcs, 1),
            pos=torch.cat(poss, 1),
            reference_points=reference_points(shapes, ratios).to(srcs[0].dtype),
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            token_mask=token_mask,
            level_masks=None if mask is None else masks,
            gate_features=gate_features,
        )

    def encode(self, prep: PixelDecoderInput, *, settings: AdaptiveSettings, exit_plan: torch.Tensor | None,
               keep_aux: bool) -> RunResult:
        """Run the adaptive encoder on the prepared tokens; see
        :meth:`~adaseg.models.mask2former.encoder.AdaptiveDeformableEncoder.forward` (every kind
        has its contract)."""
        return self.transformer(prep.src, prep.pos, prep.reference_points, prep.spatial_shapes,
                                prep.level_start_index, prep.token_mask, settings=settings, exit_plan=exit_plan,
                                keep_aux=keep_aux)

    def finish(self, tokens: torch.Tensor, prep: PixelDecoderInput, s4: torch.Tensor, mask: torch.Tensor | None):
        """Split assembled tokens into maps and build the stride-4 mask features.

        Args:
            tokens: (B, S, C) assembled encoder output; s4: (B, C4, H4, W4) backbone map.

        Returns:
            (mask_features (B, mask_dim, H4, W4), [3 x (B, C, h, w)] lowest resolution first).
        """
        b = tokens.shape[0]
        maps = []
        for (h, w), start in zip(prep.spatial_shapes.tolist(), prep.level_start_index.tolist()):
            maps.append(tokens[:, start : start + h * w].transpose(1, 2).reshape(b, -1, h, w))
        m4 = level_mask(mask, tuple(s4.shape[-2:]))
        lateral = self.adapter_1(s4, m4)
        finest = maps[-1]
        if prep.level_masks is not None:
            finest = replicate_padding(finest, prep.level_masks[-1])
        y = lateral + F.interpolate(finest, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        y = self.layer_1(y, m4)
        return self.mask_features(y), maps

