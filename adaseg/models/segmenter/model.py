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

Forward: ``model(images, padding_mask=None, settings=None)`` -> :class:`AdaptiveOutput`
(see :mod:`adaseg.models.adaptive.output`) whose heads are ``sem_logits`` (B, K_cls, H, W),
Segmenter's class masks upsampled bilinearly to the input; ``gate_features`` (B, D) is the
mean of the patch tokens after embedding over non-padding patches; ``token_shapes`` (1, 2)
is the patch grid (h, w); auxiliary-decoder records hold patch positions (b, n).

Images larger than the training crop: :func:`adaseg.models.segmenter.sliding.segmenter_inference_sliding`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adaseg.models.adaptive.output import AdaptiveOutput
from adaseg.models.adaptive.run import AdaptiveRun, RunResult
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.backbones.vit import VisionTransformer
from adaseg.models.adaptive.gate import Gate, GateHost
from adaseg.models.segmenter.decoder import MaskTransformer

__all__ = ["Segmenter", "SegmenterEmbedding", "token_validity"]


@dataclass
class SegmenterEmbedding:
    """Result of :meth:`Segmenter.embed`: ``tokens`` (B, 1 + N, D) class token first, with
    positions; ``grid`` (h, w); ``valid`` (B, N) bool or None; ``gate_features`` (B, D)."""

    tokens: torch.Tensor
    grid: tuple[int, int]
    valid: torch.Tensor | None
    gate_features: torch.Tensor


def token_validity(padding_mask: torch.Tensor | None, patch: int, grid: tuple[int, int]) -> torch.Tensor | None:
    """(B, H, W) bool (True on padding) -> (B, h*w) bool, True where a patch holds any real pixel.

    Pixels added to reach whole patches count as padding. None in, None out; also None when
    every patch is real (the attention then needs no mask).
    """
    if padding_mask is None:
        return None
    h, w = grid
    real = (~padding_mask).float()[:, None]
    real = F.pad(real, (0, w * patch - real.shape[-1], 0, h * patch - real.shape[-2]))
    valid = F.max_pool2d(real, patch).flatten(1) > 0
    return None if bool(valid.all()) else valid


class Segmenter(GateHost, nn.Module):
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
        super().__init__()
        depth = encoder.depth
        exits = tuple(range(2, depth + 1)) if exits is None else tuple(int(e) for e in exits)
        if not exits or any(not 1 <= e <= depth for e in exits) or list(exits) != sorted(set(exits)):
            raise ValueError(f"exits must be increasing layers in 1..{depth}, got {exits}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        dim = encoder.embed_dim
        dec_dim = dim if dec_dim is None else dec_dim
        dec_heads = max(1, dec_dim // 64) if dec_heads is None else dec_heads
        self.encoder = encoder
        self.num_classes = num_classes
        self.exits = exits
        self.patch_size = encoder.patch_size
        self.decoder = MaskTransformer(num_classes=num_classes, in_dim=dim, d_model=dec_dim, n_layers=dec_layers,
                                       n_heads=dec_heads, drop_path_rate=dec_drop_path)
        # aux_decoders[l-1] reads the patch tokens after layer l (pausing after layer K is moot).
        self.aux_decoders = nn.ModuleList(nn.Linear(dim, num_classes) for _ in range(depth - 1))
        for m in self.aux_decoders:
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        self.gate: Gate | None = None

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
        """Segmenter predicts semantic segmentation only."""
        return "semantic"

    @property
    def backbone(self) -> VisionTransformer:
        """The ViT (timm parameter names): where backbone-only checkpoints load."""
        return self.encoder

    def encoder_modules(self) -> list[nn.Module]:
        """The FLOP scope "encoder": the ViT blocks and the auxiliary decoders."""
        return [*self.encoder.blocks, *self.aux_decoders]

    # ------------------------------------------------------------------ encoder

    def embed(self, images: torch.Tensor, padding_mask: torch.Tensor | None = None) -> SegmenterEmbedding:
        """Patch embedding + positions, patch validity and the gate's features (no layer runs)."""
        tokens, grid = self.encoder.embed(images)
        valid = token_validity(padding_mask, self.patch_size, grid)
        patches = tokens[:, 1:]
        if valid is None:
            gate_features = patches.mean(1)
        else:
            weight = valid.to(patches.dtype).unsqueeze(-1)
            gate_features = (patches * weight).sum(1) / weight.sum(1).clamp(min=1)
        return SegmenterEmbedding(tokens=tokens, grid=grid, valid=valid, gate_features=gate_features)

    def encode(self, emb: SegmenterEmbedding, *, settings: AdaptiveSettings, exit_plan: torch.Tensor | None,
               keep_aux: bool) -> RunResult:
        """Run the adaptive ViT encoder on an :meth:`embed` output.

        Paused patches leave the token set (later layers neither update nor attend to them);
        the class token is never paused. Returns the run's result over the (B, h*w, D) patch
        map, final-normed.
        """
        vit = self.encoder
        patches = emb.tokens[:, 1:]
        run = AdaptiveRun(patches, settings=settings, exit_plan=exit_plan, aux_decoders=self.aux_decoders,
                          padding=None if emb.valid is None else ~emb.valid, keep_aux=keep_aux,
                          paused_are_values=False, on_record=vit.norm)
        run.carry["cls"] = emb.tokens[:, :1]
        for layer_no in run.layers():
            cls = run.carry["cls"]
            key_valid = None
            if run.active_padding is not None:  # the class token is always a valid key
                key_valid = torch.cat([cls.new_ones(cls.shape[0], 1, dtype=torch.bool), ~run.active_padding], dim=1)
            y = vit.blocks[layer_no - 1](torch.cat([cls, run.tokens], dim=1), key_valid)
            run.carry["cls"] = y[:, :1]
            run.step(y[:, 1:])
        result = run.finish()
        if result.tokens is not None:
            result.tokens = vit.norm(result.tokens)
        return result

    # ------------------------------------------------------------------ forward

    def forward(self, images: torch.Tensor, padding_mask: torch.Tensor | None = None,
                settings: AdaptiveSettings | None = None) -> AdaptiveOutput:
        """
        Args:
            images: (B, 3, H, W) normalised images.
            padding_mask: (B, H, W) bool True on padding, or None.
            settings: exit plan / gate, pause plan, recorded exits (None: full depth, no pausing).

        Returns:
            :class:`AdaptiveOutput` whose heads are ``sem_logits`` (B, K_cls, H, W).
        """
        settings = AdaptiveSettings() if settings is None else settings
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        b, _, h, w = images.shape
        if padding_mask is not None and tuple(padding_mask.shape) != (b, h, w):
            raise ValueError(f"padding_mask must be {(b, h, w)}, got {tuple(padding_mask.shape)}")
        settings.check_depth(self.depth)
        emb = self.embed(images, padding_mask)
        plan = settings.exit_plan(batch_size=b, depth=self.depth, gate=self.gate, gate_features=emb.gate_features,
                                  device=images.device)
        keep_aux = self.training if settings.keep_aux is None else settings.keep_aux
        enc = self.encode(emb, settings=settings, exit_plan=plan, keep_aux=keep_aux)

        def decode(tokens):
            return {"sem_logits": self.decode(tokens, emb.grid, (h, w), emb.valid)}

        return AdaptiveOutput(
            heads=None if enc.tokens is None else decode(enc.tokens),
            exits={k: decode(t) for k, t in enc.per_exit.items()},
            exit_plan=plan, gate_features=emb.gate_features, aux_logits=enc.aux, paused=enc.paused,
            token_shapes=torch.tensor([emb.grid], dtype=torch.long, device=images.device), input_size=(h, w),
            padding_mask=padding_mask,
        )

    def decode(self, tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int],
               valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, h*w, D) encoder patch tokens -> (B, K_cls, H, W) logits at input size ``size``.

        Masks are upsampled bilinearly to the patch-padded size and cropped to ``size``, as
        Segmenter does.
        """
        masks = self.decoder(tokens, grid, valid)
        p = self.patch_size
        masks = F.interpolate(masks, size=(grid[0] * p, grid[1] * p), mode="bilinear", align_corners=False)
        return masks[:, :, : size[0], : size[1]]

    # ------------------------------------------------------------------ training / inference helpers

    def build_criterion(self, *, aux_weight: float = 0.1):
        """Pixel cross-entropy (255 ignored) + PAUMER's auxiliary loss weighted ``aux_weight``
        (see :class:`~adaseg.models.segmenter.criterion.SegmenterCriterion`)."""
        from adaseg.models.segmenter.criterion import SegmenterCriterion

        return SegmenterCriterion(num_classes=self.num_classes, patch_size=self.patch_size, aux_weight=aux_weight)

    def postprocess(self, out: AdaptiveOutput, image_sizes, *, task: str = "semantic", output_sizes=None) -> list:
        """Per-image (h, w) int64 argmax maps (Segmenter is semantic-only).

        ``image_sizes``: B x (h, w) valid sizes (crops of the padded input); ``output_sizes``:
        optional B x (h', w') to resize the logits to (bilinear) before the argmax.
        """
        if task != "semantic":
            raise ValueError(f"Segmenter predicts semantic segmentation only, got task={task!r}")
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
