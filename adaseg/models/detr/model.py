"""DETR (Carion et al. 2020) with DETR's encoder as the adaptive encoder (ECO-DETR).

backbone (ResNet, one map) -> 1x1 input projection -> sine positions -> adaptive encoder
(K post-norm layers, exits + pausing, :mod:`adaseg.models.detr.encoder`) -> decoder (object
queries, deep supervision) -> class + box heads.

Heads (``AdaptiveOutput.heads``): ``pred_logits`` (B, Q, K+1) (last: no object),
``pred_boxes`` (B, Q, 4) cxcywh normalised to each image's real (unpadded) size, and
``aux_outputs``: the same for every earlier decoder layer. ``gate_features`` (B, D): the
projected backbone tokens averaged over real tokens (before any encoder layer, as ECO-M2F's
gate); ``token_shapes`` (1, 2): the token grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adaseg.models.adaptive.base import AdaptiveModelBase, EncoderInput
from adaseg.models.adaptive.gate import pool_features
from adaseg.models.adaptive.output import AdaptiveOutput
from adaseg.models.adaptive.run import RunResult
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.detr.criterion import DetrCriterion
from adaseg.models.detr.encoder import AdaptiveDetrEncoder
from adaseg.models.detr.layers import Decoder
from adaseg.models.detr.matcher import HungarianMatcher
from adaseg.models.detr.position import sine_positions
from adaseg.models.detr.postprocess import scored_boxes

__all__ = ["DETR", "DetrInput"]


@dataclass
class DetrInput(EncoderInput):
    """What :meth:`DETR.prepare` computes: ``tokens`` (B, N, D) projected backbone tokens,
    ``pos`` (B, N, D) their sine positions, ``padding`` (B, N) bool True on padding or None."""

    tokens: torch.Tensor
    pos: torch.Tensor
    padding: torch.Tensor | None


class BoxHead(nn.Module):
    """DETR's 3-layer box MLP (ReLU between), ``layers.{0,1,2}``; outputs box logits."""

    def __init__(self, *, dim: int, num_layers: int = 3) -> None:
        super().__init__()
        sizes = [dim] * (num_layers - 1) + [4]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip([dim] + sizes[:-1], sizes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class DETR(AdaptiveModelBase):
    """DETR with an adaptive encoder.

    Args:
        backbone: module whose ``forward(x)`` returns a dict of maps, ``channels`` their widths.
        feature: the backbone map the encoder reads (``"s1"``: stride 32, DETR's C5).
        num_classes: K contiguous categories.
        thing_ids: the categories that have boxes (default: all); the others (a panoptic
            dataset's stuff) are never targets.
        hidden_dim, heads, enc_layers, dec_layers, ffn, dropout: transformer sizes
            (DETR: 256, 8, 6, 6, 2048, 0.1).
        num_queries: object queries (100).
        exits: potential exits (default 2..K).
    """

    def __init__(self, *, backbone: nn.Module, feature: str = "s1", num_classes: int,
                 thing_ids: tuple[int, ...] | None = None, hidden_dim: int = 256,
                 heads: int = 8, enc_layers: int = 6, dec_layers: int = 6, ffn: int = 2048, dropout: float = 0.1,
                 num_queries: int = 100, exits: tuple[int, ...] | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if feature not in backbone.channels:
            raise ValueError(f"feature must be one of the backbone's maps {sorted(backbone.channels)}, got {feature!r}")
        if enc_layers < 2 or dec_layers < 1 or num_queries < 1:
            raise ValueError(f"DETR needs enc_layers >= 2, dec_layers >= 1, num_queries >= 1, got "
                             f"{enc_layers}, {dec_layers}, {num_queries}")
        thing_ids = tuple(range(num_classes)) if thing_ids is None else tuple(int(t) for t in thing_ids)
        if not thing_ids or any(not 0 <= t < num_classes for t in thing_ids):
            raise ValueError(f"thing_ids must be a non-empty subset of 0..{num_classes - 1}, got {thing_ids}")
        super().__init__(depth=enc_layers, exits=exits)
        self.backbone = backbone
        self.thing_ids = thing_ids
        self.feature = feature
        self.num_classes = num_classes
        self.hidden_dim = hidden_dim
        self.input_proj = nn.Conv2d(backbone.channels[feature], hidden_dim, 1)
        self.encoder = AdaptiveDetrEncoder(dim=hidden_dim, heads=heads, ffn=ffn, dropout=dropout,
                                           num_layers=enc_layers, num_classes=num_classes)
        self.decoder = Decoder(dim=hidden_dim, heads=heads, ffn=ffn, dropout=dropout, num_layers=dec_layers)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = BoxHead(dim=hidden_dim)
        self.class_map: torch.Tensor | None = None  # set_class_map: labels in a dataset's classes
        # DETR's transformer init: Xavier-uniform matrices in the encoder and decoder
        for p in [*self.encoder.layers.parameters(), *self.decoder.parameters()]:
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    @property
    def backbone(self) -> nn.Module:
        """The backbone (``backbone.*``); a property over the submodule for the runtime
        protocol check (see :class:`~adaseg.models.mask2former.Mask2Former`)."""
        return self._modules["backbone"]

    @property
    def depth(self) -> int:
        return self.encoder.num_layers

    @property
    def gate_channels(self) -> int:
        return self.hidden_dim

    @property
    def task(self) -> str:
        """DETR predicts boxes."""
        return "detection"

    def encoder_modules(self) -> list[nn.Module]:
        """The FLOP scope "encoder": the encoder layers and their auxiliary decoders."""
        return [self.encoder]

    # ------------------------------------------------------------------ the template's hooks

    def prepare(self, images: torch.Tensor, padding_mask: torch.Tensor | None) -> DetrInput:
        feats = self.backbone(images)[self.feature]
        grid = tuple(feats.shape[-2:])
        if padding_mask is None:
            pad_map = torch.zeros(feats.shape[0], *grid, dtype=torch.bool, device=images.device)
        else:  # nearest-neighbour, as DETR downsamples its mask
            pad_map = F.interpolate(padding_mask[None].float(), size=grid)[0].bool()
        proj = self.input_proj(feats)
        pos = sine_positions(~pad_map, self.hidden_dim).to(proj.dtype)
        padding = pad_map.flatten(1) if bool(pad_map.any()) else None
        return DetrInput(gate_features=pool_features(proj, pad_map if padding is not None else None),
                         token_shapes=torch.tensor([grid], dtype=torch.long, device=images.device),
                         tokens=proj.flatten(2).transpose(1, 2), pos=pos.flatten(2).transpose(1, 2), padding=padding)

    def encode(self, prep: DetrInput, *, settings: AdaptiveSettings, exit_plan: torch.Tensor | None,
               keep_aux: bool) -> RunResult:
        return self.encoder(prep.tokens, prep.pos, prep.padding, settings=settings, exit_plan=exit_plan,
                            keep_aux=keep_aux)

    def decode(self, tokens: torch.Tensor, prep: DetrInput) -> dict:
        """(B, N, D) encoder tokens -> the class and box heads of every decoder layer."""
        valid = None if prep.padding is None else ~prep.padding
        hs = self.decoder(self.query_embed.weight, tokens, prep.pos, valid)  # (L, B, Q, D)
        logits, boxes = self.class_embed(hs), self.bbox_embed(hs).sigmoid()
        return {"pred_logits": logits[-1], "pred_boxes": boxes[-1],
                "aux_outputs": [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])]}

    # ------------------------------------------------------------------ training / inference helpers

    def build_criterion(self, *, aux_weight: float = 0.1) -> DetrCriterion:
        """DETR's loss (costs and weights class 1 / L1 5 / GIoU 2, no-object weight 0.1) +
        PAUMER's auxiliary loss weighted ``aux_weight``."""
        return DetrCriterion(num_classes=self.num_classes, matcher=HungarianMatcher(), thing_ids=self.thing_ids,
                             aux_weight=aux_weight)

    def postprocess(self, out: AdaptiveOutput, image_sizes, *, task: str = "detection", output_sizes=None) -> list:
        """Per image ``{"boxes" (Q, 4) xyxy, "scores" (Q,), "labels" (Q,) contiguous}`` in the
        pixels of ``output_sizes`` (B x (h', w'), e.g. the original sizes) or else of
        ``image_sizes`` (B x (h, w), the real part of the padded input). With a class map
        (:meth:`set_class_map`) labels are the mapped classes and Q counts the queries kept."""
        if task != "detection":
            raise ValueError(f"DETR predicts boxes only (task='detection'), got task={task!r}")
        heads = out.single_heads()
        sizes = image_sizes if output_sizes is None else output_sizes
        if len(image_sizes) != heads["pred_logits"].shape[0]:
            raise ValueError(f"{len(image_sizes)} image sizes for a batch of {heads['pred_logits'].shape[0]}")
        results = scored_boxes(heads["pred_logits"], heads["pred_boxes"], [(int(h), int(w)) for h, w in sizes])
        return results if self.class_map is None else [_mapped(r, self.class_map) for r in results]

    def set_class_map(self, class_map) -> None:
        """Label detections in another class set (a dataset's, :mod:`adaseg.runs.class_match`):
        ``class_map[k]`` is the class of this model's class ``k`` there, -1 for none (an
        ``N/A`` slot of a head indexed by COCO category id): :meth:`postprocess` relabels each
        query's most likely class (softmax over all K classes, as without a map) and drops the
        queries whose class maps to -1. ``None``: the model's own classes. Not a weight: the
        state dict and its fingerprint are unchanged."""
        if class_map is None:
            self.class_map = None
            return
        t = torch.as_tensor([int(j) for j in class_map], dtype=torch.long)
        if t.numel() != self.num_classes or bool((t < -1).any()):
            raise ValueError(f"class_map must give one class >= -1 for each of the {self.num_classes} classes, "
                             f"got {t.numel()} values")
        self.class_map = t


def _mapped(result: dict, class_map: torch.Tensor) -> dict:
    """One image's scored boxes with labels mapped by ``class_map``; queries mapped to -1 dropped."""
    labels = class_map.to(result["labels"].device)[result["labels"]]
    keep = labels >= 0
    return {"boxes": result["boxes"][keep], "scores": result["scores"][keep], "labels": labels[keep]}
