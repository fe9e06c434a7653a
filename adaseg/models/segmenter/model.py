"""Segmenter (ViT encoder + mask transformer) with the adaptive-encoder contract.

The ViT's layers are the adaptive encoder (K = depth, exits numbered 1..K):

* **exit plan**: each image leaves the encoder after its exit layer; images that have left
  are dropped from the batch, so later layers run on fewer images. A batch with mixed exits
  gives per image what that image alone at that exit gives.
* **pause plan** (PAUMER): after layer l, a 1x1 linear auxiliary decoder (``aux_decoders[l-1]``,
  one per layer 1..K-1) scores every still-active patch token; the ``ratio`` of them with the
  lowest entropy (``pause_mode="entropy"``) or uniformly random ones (``"random"``, PAUMER's
  baseline) are *removed* from the token set: later layers neither update them nor attend to
  them. The class token is never paused. At the exit an assembler puts every paused token
  back in place, with the features it had when it paused, and the final LayerNorm and the
  mask decoder see the full token grid.

Forward: :class:`~adaseg.models.adaptive.base.AdaptiveModelBase`'s template over the ViT's
adaptive encoder (:meth:`~adaseg.models.backbones.vit.VisionTransformer.prepare`, ``encode``):
``model(images, padding_mask=None, settings=None)`` -> :class:`AdaptiveOutput` whose heads
are ``sem_logits`` (B, K_cls, H, W), Segmenter's class masks upsampled bilinearly to the
input; ``gate_features`` (B, D) is the mean of the patch tokens after embedding over
non-padding patches; ``token_shapes`` (1, 2) is the patch grid (h, w); auxiliary-decoder
records hold patch positions (b, n).

Early exit (``settings.pause_output="aux"``, PAUMER App. I): a paused patch is labelled by
the auxiliary decoder of its pause layer and the mask transformer reads only the active
patches (:mod:`adaseg.models.segmenter.early_exit`); the heads then also hold
``token_source`` (B, h, w) int64, 0 where the mask transformer labelled a patch and l where
the auxiliary decoder after layer l did.

Images larger than the training crop: :func:`adaseg.models.segmenter.sliding.segmenter_inference_sliding`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adaseg.models.adaptive.run import RunResult
from adaseg.models.backbones.vit import ViTInput, VisionTransformer
from adaseg.models.segmenter.decoder import MaskTransformer
from adaseg.models.segmenter.early_exit import early_exit_logits
from adaseg.models.segmenter.vit_semantic import ViTSemanticModel

__all__ = ["Segmenter"]


class Segmenter(ViTSemanticModel):
    """ViT encoder + Segmenter mask transformer, adaptive in depth (exits) and width (pausing).

    Args:
        encoder: a :class:`VisionTransformer` (timm names; see ``adaseg.models.backbones``).
        num_classes: semantic classes K_cls.
        dec_layers: mask-transformer layers (2).
        dec_dim: decoder width (default: the encoder width, as in Segmenter).
        dec_heads: decoder heads (default: dec_dim // 64, at least 1, as in Segmenter).
        dec_drop_path: stochastic depth in the decoder.
        exits: potential exits, the ones recipes record (default 2..K).
    """

    early_exit_refusal = None  # the mask transformer runs on any subset of patches

    def __init__(
        self,
        *,
        encoder: VisionTransformer,
        num_classes: int,
        dec_layers: int = 2,
        dec_dim: int | None = None,
        dec_heads: int | None = None,
        dec_drop_path: float = 0.0,
        exits: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(encoder=encoder, num_classes=num_classes, exits=exits)
        dim = encoder.embed_dim
        dec_dim = dim if dec_dim is None else dec_dim
        dec_heads = max(1, dec_dim // 64) if dec_heads is None else dec_heads
        self.decoder = MaskTransformer(num_classes=num_classes, in_dim=dim, d_model=dec_dim, n_layers=dec_layers,
                                       n_heads=dec_heads, drop_path_rate=dec_drop_path)
        self._add_aux_decoders()

    # ------------------------------------------------------------------ the template's hooks

    def decode(self, tokens: torch.Tensor, prep: ViTInput) -> dict:
        """(B, h*w, D) encoder patch tokens -> ``{"sem_logits": (B, K_cls, H, W)}``: the class
        masks upsampled bilinearly to the patch-padded size and cropped to the input, as
        Segmenter does."""
        return {"sem_logits": self._upsample(self.decoder(tokens, prep.grid, prep.valid), prep)}

    def decode_early_exit(self, result: RunResult, prep: ViTInput) -> dict:
        """PAUMER's early exit: ``result.tokens`` (B, h*w, D) before the final norm ->
        ``{"sem_logits": (B, K_cls, H, W), "token_source": (B, h, w) int64}``; see
        :func:`~adaseg.models.segmenter.early_exit.early_exit_logits`."""
        logits, source = early_exit_logits(result.tokens, result.paused, aux_decoders=self.aux_decoders,
                                           decoder=self.decoder, final_norm=self.encoder.norm, valid=prep.valid)
        b, (h, w) = logits.shape[0], prep.grid
        masks = logits.transpose(1, 2).reshape(b, self.num_classes, h, w)
        return {"sem_logits": self._upsample(masks, prep), "token_source": source.view(b, h, w)}

    def _upsample(self, masks: torch.Tensor, prep: ViTInput) -> torch.Tensor:
        """(B, K, h, w) patch logits -> (B, K, H, W): bilinear to the patch-padded size, cropped."""
        p = self.patch_size
        masks = F.interpolate(masks, size=(prep.grid[0] * p, prep.grid[1] * p), mode="bilinear", align_corners=False)
        return masks[:, :, : prep.input_size[0], : prep.input_size[1]]
