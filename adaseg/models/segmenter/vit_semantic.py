"""The ViT half that Segmenter and SETR share: a semantic model whose adaptive encoder is a ViT.

Both put a decoder of their own on :class:`~adaseg.models.backbones.vit.VisionTransformer`'s
adaptive loop (``prepare``/``encode``: exits per image; after a pause layer the 1x1 auxiliary
decoder of that layer scores the active patches and the chosen ones pause) and train with
Segmenter's semantic loss. This base holds everything but the decoder: the contract's
properties, the FLOP scope, the two encoder hooks, the criterion and the argmax
post-processing. A subclass builds ``self.decoder`` and implements ``decode``.
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

__all__ = ["ViTSemanticModel"]


class ViTSemanticModel(AdaptiveModelBase):
    """A semantic-segmentation model on an adaptive ViT encoder (subclasses add the decoder).

    Args:
        encoder: a :class:`VisionTransformer` (timm names; see ``adaseg.models.backbones``).
        num_classes: semantic classes K_cls.
        exits: potential exits, the ones recipes record (default 2..K).

    A subclass's ``__init__`` calls this one, then sets ``self.decoder`` and then
    :meth:`_add_aux_decoders` (in that order, so that the parameters are created, and the
    random generator consumed, in the order the checkpoints of both models were made with).
    """

    def __init__(self, *, encoder: VisionTransformer, num_classes: int, exits: tuple[int, ...] | None = None) -> None:
        super().__init__(depth=encoder.depth, exits=exits)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.encoder = encoder
        self.num_classes = num_classes
        self.patch_size = encoder.patch_size

    def _add_aux_decoders(self) -> None:
        """PAUMER's 1x1 auxiliary decoders, one per layer 1..K-1."""
        self.aux_decoders = build_aux_decoders(dim=self.encoder.embed_dim, num_classes=self.num_classes,
                                               depth=self.encoder.depth)

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
        """Semantic segmentation only."""
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
        # early exit reads paused patches as their auxiliary decoder saw them (before the final
        # norm); models that refuse early exit never get here with it set
        return self.encoder.encode(prep, aux_decoders=self.aux_decoders, settings=settings, exit_plan=exit_plan,
                                   keep_aux=keep_aux, final_norm=not settings.early_exit)

    # ------------------------------------------------------------------ training / inference helpers

    def build_criterion(self, *, aux_weight: float = 0.1) -> SegmenterCriterion:
        """Pixel cross-entropy (255 ignored) + PAUMER's auxiliary loss weighted ``aux_weight``
        (see :class:`~adaseg.models.segmenter.criterion.SegmenterCriterion`)."""
        return SegmenterCriterion(num_classes=self.num_classes, patch_size=self.patch_size, aux_weight=aux_weight)

    def postprocess(self, out: AdaptiveOutput, image_sizes, *, task: str = "semantic", output_sizes=None) -> list:
        """Per-image (h, w) int64 argmax maps (semantic only).

        ``image_sizes``: B x (h, w) valid sizes (crops of the padded input); ``output_sizes``:
        optional B x (h', w') to resize the logits to (bilinear) before the argmax.
        """
        if task != "semantic":
            raise ValueError(f"{type(self).__name__} predicts semantic segmentation only, got task={task!r}")
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
