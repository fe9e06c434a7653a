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

from adaseg.models.backbones.vit import ViTInput, VisionTransformer
from adaseg.models.setr.decoder import PUPDecoder
from adaseg.models.segmenter.vit_semantic import ViTSemanticModel

__all__ = ["SETR"]


class SETR(ViTSemanticModel):
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
        super().__init__(encoder=encoder, num_classes=num_classes, exits=exits)
        self.decoder = PUPDecoder(in_dim=encoder.embed_dim, channels=channels, num_classes=num_classes,
                                  num_convs=num_convs, up_scale=up_scale)
        self._add_aux_decoders()

    # ------------------------------------------------------------------ the template's hooks

    def decode(self, tokens: torch.Tensor, prep: ViTInput) -> dict:
        """(B, h*w, D) final-normed patch tokens -> ``{"sem_logits": (B, K_cls, H, W)}``."""
        logits = self.decoder(tokens, prep.grid)
        p = self.patch_size
        size = (prep.grid[0] * p, prep.grid[1] * p)
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return {"sem_logits": logits[:, :, : prep.input_size[0], : prep.input_size[1]]}
