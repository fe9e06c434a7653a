"""DETR builders (registered in :mod:`adaseg.models.registry`)."""

from __future__ import annotations

from torch import nn

from adaseg.models.backbones import build_backbone
from adaseg.models.detr.model import DETR


def detr_r50(*, num_classes: int = 80, thing_ids: tuple | None = None, hidden_dim: int = 256, heads: int = 8,
             enc_layers: int = 6, dec_layers: int = 6, ffn: int = 2048, dropout: float = 0.1,
             num_queries: int = 100, exits: tuple = (2, 3, 4, 5, 6)) -> DETR:
    """DETR-R50 (the paper's): ResNet-50 with frozen BatchNorm, C5 (stride 32), d 256, 8 heads,
    6 + 6 layers, FFN 2048, 100 queries; COCO's 80 categories (``thing_ids`` None: every class
    has boxes)."""
    return DETR(backbone=build_backbone("resnet50", frozen_bn=True), feature="s1", num_classes=num_classes,
                thing_ids=None if thing_ids is None else tuple(thing_ids), hidden_dim=hidden_dim, heads=heads,
                enc_layers=enc_layers, dec_layers=dec_layers, ffn=ffn, dropout=dropout, num_queries=num_queries,
                exits=tuple(exits))


def detr_tiny(*, num_classes: int = 9, thing_ids: tuple = (0, 1, 2, 3, 4), hidden_dim: int = 64, heads: int = 4,
              enc_layers: int = 6, dec_layers: int = 3, ffn: int = 256, dropout: float = 0.0,
              num_queries: int = 20, exits: tuple = (2, 3, 4, 5, 6)) -> DETR:
    """CPU default: the tiny ResNet (trainable BatchNorm: it starts from scratch) read at
    stride 16 (its last stage is dropped: 8 x 8 tokens at the built-in set's 128 px instead of
    4 x 4), d 64, 4 heads, 6 encoder + 3 decoder layers, 20 queries; the built-in set's classes
    (5 things, which have boxes, then 4 stuff)."""
    backbone = build_backbone("resnet_tiny")
    backbone.layer4 = nn.Identity()  # unused at stride 16: no parameters without gradients
    backbone.channels["s1"], backbone.strides["s1"] = backbone.channels["s2"], 16  # "s1" is now layer3's map
    return DETR(backbone=backbone, feature="s2", num_classes=num_classes, thing_ids=tuple(thing_ids),
                hidden_dim=hidden_dim, heads=heads, enc_layers=enc_layers, dec_layers=dec_layers, ffn=ffn,
                dropout=dropout, num_queries=num_queries, exits=tuple(exits))
