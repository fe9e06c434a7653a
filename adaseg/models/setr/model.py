"""SETR-PUP (ViT encoder + progressive-upsampling decoder) with the adaptive-encoder contract.

PAUMER on SETR (App. J): the ViT's layers are the adaptive encoder exactly as in Segmenter
(:meth:`~adaseg.models.backbones.vit.VisionTransformer.prepare`/``encode``: exits per image;
after a pause layer the 1x1 auxiliary decoder of that layer scores the active patches and the
lowest-entropy ones pause, leaving attention; the patch assembler puts every patch back, with
the features it paused with, before the final norm and the decoder). The PUP decoder is
convolutional over the whole grid, so it always reads every patch.

Forward: ``model(images, padding_mask=None, settings=None)`` -> :class:`AdaptiveOutput` whose
heads are ``sem_logits`` (B, K_cls, H, W): the PUP logits (at ``scale`` times the token grid)
resized bilinearly to the patch-padded input when the decoder's scale is not the patch size
(as SETR's segmentor resizes its logits), then cropped to the input.

No early-exit output (``pause_output="aux"``): a convolutional decoder cannot leave paused
patches out, so it would cost the same and only overwrite labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adaseg.models.adaptive.base import AdaptiveModelBase
from adaseg.models.adaptive.output import AdaptiveOutput
from adaseg.models.adaptive.run import RunResult
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.backbones.vit import ViTInput, VisionTransformer, build_aux_decoders
from adaseg.models.segmenter.criterion import SegmenterCriterion
from adaseg.models.setr.decoder import PUPDecoder

__all__ = ["SETR"]


class SETR(AdaptiveModelBase):
    """ViT encoder + SETR's PUP decoder, adaptive in depth (exits) and width (pausing).

    Args:
        encoder: a :class:`VisionTransformer`.
        num_classes: semantic classes K_cls.
        channels: decoder width (SETR: 256; PAUMER's ViT-Ti: 192).
        num_convs: decoder stages (SETR: 4; PAUMER's ViT-Ti: 2).
        up_scale: upsampling per stage (SETR: 2; PAUMER's ViT-Ti: 4).
        exits: potential exits, the ones recipes record (default 2..K).
    """

    early_exit_refusal = ("SETR's PUP decoder is convolutional over the whole token grid: it reads every patch "
                          "whatever paused, so an early exit would save nothing")

    def __init__(self, *, encoder: VisionTransformer, num_classes: int, channels: int, num_convs: int,
                 up_scale: int, exits: tuple[int, ...] | None = None) -> None:
        super().__init__(depth=encoder.depth, exits=exits)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.encoder = encoder
        self.num_classes = num_classes
        self.patch_size = encoder.patch_size
        self.decoder = PUPDecoder(in_dim=encoder.embed_dim, channels=channels, num_classes=num_classes,
                                  num_convs=num_convs, up_scale=up_scale)
        self.aux_decoders = build_aux_decoders(dim=encoder.embed_dim, num_classes=num_classes, depth=encoder.depth)

    @property
    def depth(self) -> int:
        """K, the number of encoder layers."""
        return self.encoder.depth

    @property
    def gate_channels(self) -> int:
        """C of ``gate_features``."""
        return self.encoder.embed_dim

    @property
    def task(self) -> str:
        """SETR predicts semantic segmentation only."""
        return "semantic"

    @property
    def backbone(self) -> VisionTransformer:
        """The ViT (timm parameter names): where backbone-only checkpoints load."""
        return self.encoder

    def encoder_modules(self) -> list[nn.Module]:
        """The FLOP scope "encoder": the ViT blocks and the auxiliary decoders."""
        return [*self.encoder.blocks, *self.aux_decoders]

    # ------------------------------------------------------------------ the template's hooks

    def prepare(self, images: torch.Tensor, padding_mask: torch.Tensor | None = None) -> ViTInput:
        return self.encoder.prepare(images, padding_mask)

    def encode(self, prep: ViTInput, *, settings: AdaptiveSettings, exit_plan: torch.Tensor | None,
               keep_aux: bool) -> RunResult:
        return self.encoder.encode(prep, aux_decoders=self.aux_decoders, settings=settings, exit_plan=exit_plan,
                                   keep_aux=keep_aux)

    def decode(self, tokens: torch.Tensor, prep: ViTInput) -> dict:
        """(B, h*w, D) final-normed patch tokens -> ``{"sem_logits": (B, K_cls, H, W)}``."""
        logits = self.decoder(tokens, prep.grid)
        p = self.patch_size
        size = (prep.grid[0] * p, prep.grid[1] * p)
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return {"sem_logits": logits[:, :, : prep.input_size[0], : prep.input_size[1]]}

    # ------------------------------------------------------------------ training / inference helpers

    def build_criterion(self, *, aux_weight: float = 0.1) -> SegmenterCriterion:
        """Pixel cross-entropy (255 ignored) + PAUMER's auxiliary loss weighted ``aux_weight``
        (the semantic loss Segmenter uses: :class:`~adaseg.models.segmenter.criterion.SegmenterCriterion`)."""
        return SegmenterCriterion(num_classes=self.num_classes, patch_size=self.patch_size, aux_weight=aux_weight)

    def postprocess(self, out: AdaptiveOutput, image_sizes, *, task: str = "semantic", output_sizes=None) -> list:
        """Per-image (h, w) int64 argmax maps (SETR is semantic-only).

        ``image_sizes``: B x (h, w) valid sizes (crops of the padded input); ``output_sizes``:
        optional B x (h', w') to resize the logits to (bilinear) before the argmax.
        """
        if task != "semantic":
            raise ValueError(f"SETR predicts semantic segmentation only, got task={task!r}")
        logits = out.single_heads()["sem_logits"]
        if len(image_sizes) != logits.shape[0]:
            raise ValueError(f"{len(image_sizes)} image sizes for a batch of {logits.shape[0]}")
        results = []
        for i, (h, w) in enumerate(image_sizes):
            lg = logits[i : i + 1, :, : int(h), : int(w)].float()
            if output_sizes is not None and tuple(output_sizes[i]) != (int(h), int(w)):
                lg = F.interpolate(lg, size=tuple(output_sizes[i]), mode="bilinear", align_corners=False)
            results.append(lg[0].argmax(0))
        return results
