"""Mask2Former with the adaptive encoder (ECO-M2F exits, PAUMER pausing) and a gate."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adaseg.models.adaptive.base import AdaptiveModelBase, EncoderInput
from adaseg.models.adaptive.output import AdaptiveOutput
from adaseg.models.adaptive.run import RunResult
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.mask2former.criterion import SetCriterion
from adaseg.models.mask2former.encoder_kinds import DEFORMABLE_KINDS, PAUSE_REFUSALS
from adaseg.models.mask2former.matcher import HungarianMatcher
from adaseg.models.mask2former.pixel_decoder import MSDeformAttnPixelDecoder, PixelDecoderInput
from adaseg.models.mask2former.postprocess import postprocess as _postprocess
from adaseg.models.mask2former.transformer_decoder import MultiScaleMaskedTransformerDecoder


@dataclass
class Mask2FormerInput(EncoderInput):
    """What :meth:`Mask2Former.prepare` computes before encoder layer 1: the pixel decoder's
    prepared tokens, the stride-4 backbone map ``s4`` (B, C4, H/4, W/4) its FPN path reads,
    and the image ``padding_mask`` (B, H, W) or None."""

    pixel: PixelDecoderInput
    s4: torch.Tensor
    padding_mask: torch.Tensor | None


class Mask2Former(AdaptiveModelBase):
    """Backbone -> adaptive pixel decoder -> masked-attention decoder.

    Heads (``AdaptiveOutput.heads``): ``pred_logits`` (B, Q, K+1), ``pred_masks``
    (B, Q, H/4, W/4) and ``aux_outputs`` (per decoder layer); token_shapes (L, 2).

    Args:
        backbone: module with ``forward(x) -> {"s1", "s2", "s3", "s4"}`` maps at strides
            32/16/8/4 and ``channels: dict`` of their widths.
        num_classes: K contiguous categories (class logits have K+1, the last "no object").
        thing_ids: contiguous ids of "thing" categories (the rest are "stuff").
        hidden_dim: pixel-decoder conv dim and decoder hidden dim.
        mask_dim: mask-feature / mask-embedding channels.
        enc_layers, enc_heads, enc_points, enc_ffn, enc_dropout: adaptive encoder settings
            (``enc_points``: deformable attention's points, None = 4; the rt encoder has none).
        dec_layers, dec_heads, dec_ffn, num_queries: transformer-decoder settings.
        norm_groups: GroupNorm groups in the pixel decoder.
        exits: potential exits (encoder layers), e.g. (2, ..., 6), the ones recipes record.
        object_mask_threshold, overlap_threshold, test_topk: post-processing settings.
        train_points: points per mask for matching and losses (12544 in Mask2Former; scale
            it with the mask-feature size for small inputs).
        encoder: the pixel decoder's encoder kind: ``deform`` (Mask2Former's), ``lite``
            (Lite-DETR's interleaved encoder) or ``rt`` (RT-DETR's hybrid encoder; 5 layers);
            see :mod:`~adaseg.models.mask2former.encoder_kinds`.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        num_classes: int,
        thing_ids: tuple[int, ...],
        hidden_dim: int = 256,
        mask_dim: int = 256,
        enc_layers: int = 6,
        enc_heads: int = 8,
        enc_points: int | None = None,
        enc_ffn: int = 1024,
        enc_dropout: float = 0.0,
        dec_layers: int = 9,
        dec_heads: int = 8,
        dec_ffn: int = 2048,
        num_queries: int = 100,
        norm_groups: int = 32,
        exits: tuple[int, ...] | None = None,
        object_mask_threshold: float = 0.8,
        overlap_threshold: float = 0.8,
        test_topk: int = 100,
        train_points: int = 12544,
        encoder: str = "deform",
    ):
        thing_ids = tuple(int(t) for t in thing_ids)
        if any(not 0 <= t < num_classes for t in thing_ids):
            raise ValueError(f"thing_ids must be in 0..{num_classes - 1}, got {thing_ids}")
        super().__init__(depth=enc_layers, exits=exits)
        self.backbone = backbone
        self.num_classes = num_classes
        self.thing_ids = thing_ids
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.test_topk = test_topk
        self.train_points = train_points
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            in_channels=dict(backbone.channels),
            conv_dim=hidden_dim,
            mask_dim=mask_dim,
            num_layers=enc_layers,
            n_heads=enc_heads,
            n_points=enc_points if enc_points is not None or encoder not in DEFORMABLE_KINDS else 4,
            dim_feedforward=enc_ffn,
            dropout=enc_dropout,
            num_classes=num_classes,
            norm_groups=norm_groups,
            encoder=encoder,
        )
        self.predictor = MultiScaleMaskedTransformerDecoder(
            in_channels=hidden_dim,
            num_classes=num_classes,
            hidden_dim=hidden_dim,
            num_queries=num_queries,
            nheads=dec_heads,
            dim_feedforward=dec_ffn,
            dec_layers=dec_layers,
            mask_dim=mask_dim,
        )

    @property
    def backbone(self) -> nn.Module:
        """The pretrained backbone (``backbone.*`` in the state dict). A property over the
        registered submodule: Python 3.12's runtime protocol check looks attributes up
        statically, and nn.Module keeps submodules in ``_modules``, so a plain submodule
        attribute made ``isinstance(model, AdaptiveModel)`` False there."""
        return self._modules["backbone"]

    @property
    def depth(self) -> int:
        """K, the number of encoder layers."""
        return self.pixel_decoder.num_layers

    @property
    def gate_channels(self) -> int:
        """C of ``gate_features`` (the encoder's token width)."""
        return self.pixel_decoder.conv_dim

    @property
    def pause_refusal(self) -> str | None:
        """Why this model cannot pause tokens, or None: its encoder kind's
        (:data:`~adaseg.models.mask2former.encoder_kinds.PAUSE_REFUSALS`; ``rt`` refuses)."""
        return PAUSE_REFUSALS[self.pixel_decoder.encoder_kind]

    @property
    def exit2_channels(self) -> int:
        """F of the exit-2 gate's input: every encoder kind keeps one (B, S, C) map of the
        levels concatenated (``token_shapes``), pooled per level: levels x C."""
        return len(self.pixel_decoder.input_proj) * self.pixel_decoder.conv_dim

    @property
    def task(self) -> str:
        """Mask2Former predicts panoptic segmentation (and, from it, semantic and instance)."""
        return "panoptic"

    def encoder_modules(self) -> list[nn.Module]:
        """The FLOP scope "encoder": the pixel decoder's encoder of any kind (layers + auxiliary
        decoders; not the input projections nor the FPN path, which every kind shares)."""
        return [self.pixel_decoder.transformer]

    # ------------------------------------------------------------------ the template's hooks

    def prepare(self, images: torch.Tensor, padding_mask: torch.Tensor | None) -> Mask2FormerInput:
        features = self.backbone(images)
        pixel = self.pixel_decoder.prepare(features, padding_mask)
        return Mask2FormerInput(gate_features=pixel.gate_features, token_shapes=pixel.spatial_shapes, pixel=pixel,
                                s4=features["s4"], padding_mask=padding_mask)

    def encode(self, prep: Mask2FormerInput, *, settings: AdaptiveSettings, exit_plan: torch.Tensor | None,
               keep_aux: bool) -> RunResult:
        return self.pixel_decoder.encode(prep.pixel, settings=settings, exit_plan=exit_plan, keep_aux=keep_aux)

    def decode(self, tokens: torch.Tensor, prep: Mask2FormerInput) -> dict:
        mask_features, maps = self.pixel_decoder.finish(tokens, prep.pixel, prep.s4, prep.padding_mask)
        return self.predictor(maps, mask_features, prep.pixel.level_masks)

    def build_criterion(self, *, aux_weight: float = 0.1, **overrides) -> SetCriterion:
        """The training loss for this model (Mask2Former's weights, ``train_points`` points
        for matching and losses); ``overrides`` go to :class:`SetCriterion`."""
        matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=self.train_points)
        kwargs = {"num_points": self.train_points, **overrides}
        return SetCriterion(num_classes=self.num_classes, matcher=matcher, aux_weight=aux_weight, **kwargs)

    def postprocess(self, out: AdaptiveOutput, image_sizes, *, task: str = "panoptic", output_sizes=None) -> list:
        """Per-image predictions; see :func:`adaseg.models.mask2former.postprocess.postprocess`."""
        return _postprocess(
            {**out.single_heads(), "input_size": out.input_size},
            image_sizes,
            task=task,
            num_classes=self.num_classes,
            thing_ids=self.thing_ids,
            object_mask_threshold=self.object_mask_threshold,
            overlap_threshold=self.overlap_threshold,
            test_topk=self.test_topk,
            output_sizes=output_sizes,
        )
