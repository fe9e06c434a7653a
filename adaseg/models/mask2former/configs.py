"""Builders for the registered Mask2Former configurations (one small function per name).

Backbones come from :mod:`adaseg.models.backbones`, looked up by name when a model is built.
"""

from __future__ import annotations

import importlib

from adaseg.models.mask2former.model import Mask2Former

# COCO panoptic: 133 contiguous categories, the first 80 are things
COCO_CLASSES = 133
COCO_THING_IDS = tuple(range(80))


def backbone_by_name(name: str, **kwargs):
    """``adaseg.models.backbones.build_backbone(name, **kwargs)``, imported when a model is built."""
    module = importlib.import_module("adaseg.models.backbones")
    return module.build_backbone(name, **kwargs)


# Mask2Former's Swin (and HF's SwinBackbone) shifts the windows of every odd block, also on stage
# maps no larger than one window; the swin_* builders default to timm's rule, which skips that
# shift. With this, original/HF weights reproduce the original's outputs at any input size.
_SWIN_OVERRIDES = {"always_shift": True}


def _paper(backbone: str, *, backbone_overrides: dict | None = None, **settings) -> Mask2Former:
    """Mask2Former's paper configuration (d 256, 6 encoder layers, 9 decoder layers, 100 queries)."""
    return Mask2Former(backbone=backbone_by_name(backbone, **(backbone_overrides or {})), **settings)


def m2f_r50(*, num_classes: int = COCO_CLASSES, thing_ids: tuple = COCO_THING_IDS, exits: tuple = (2, 3, 4, 5, 6),
            num_queries: int = 100, train_points: int = 12544) -> Mask2Former:
    """Mask2Former R-50 (COCO panoptic by default)."""
    return _paper("resnet50", num_classes=num_classes, thing_ids=thing_ids, exits=exits,
                  num_queries=num_queries, train_points=train_points)


def m2f_swin_t(*, num_classes: int = COCO_CLASSES, thing_ids: tuple = COCO_THING_IDS, exits: tuple = (2, 3, 4, 5, 6),
               num_queries: int = 100, train_points: int = 12544) -> Mask2Former:
    """Mask2Former Swin-T (COCO panoptic by default)."""
    return _paper("swin_t", backbone_overrides=_SWIN_OVERRIDES, num_classes=num_classes, thing_ids=thing_ids,
                  exits=exits, num_queries=num_queries, train_points=train_points)


def m2f_swin_s(*, num_classes: int = COCO_CLASSES, thing_ids: tuple = COCO_THING_IDS, exits: tuple = (2, 3, 4, 5, 6),
               num_queries: int = 100, train_points: int = 12544) -> Mask2Former:
    """Mask2Former Swin-S (COCO panoptic by default)."""
    return _paper("swin_s", backbone_overrides=_SWIN_OVERRIDES, num_classes=num_classes, thing_ids=thing_ids,
                  exits=exits, num_queries=num_queries, train_points=train_points)


def m2f_swin_b(*, num_classes: int = COCO_CLASSES, thing_ids: tuple = COCO_THING_IDS, exits: tuple = (2, 3, 4, 5, 6),
               num_queries: int = 100, train_points: int = 12544) -> Mask2Former:
    """Mask2Former Swin-B (COCO panoptic by default; the paper's Swin-B uses 384 px windows
    and 200 queries on COCO, pass ``num_queries=200`` for that)."""
    return _paper("swin_b", backbone_overrides=_SWIN_OVERRIDES, num_classes=num_classes, thing_ids=thing_ids,
                  exits=exits, num_queries=num_queries, train_points=train_points)


# Lite-M2F / RT-M2F (ECO-M2F's Table 1 and Table T1): the paper configuration with another
# encoder kind (adaseg/models/mask2former/encoder_kinds.py). Lite-M2F keeps 6 layers; ECO on it
# (Lite-ECO-M2F) exits after layers 2..5 with the all-scale layer 6 kept (run after the exit,
# never an exit itself: exit 5 is the full model). RT-M2F's encoder is
# 5 adaptive layers whose natural exits are 3 (after the top-down fusion) and 5 (after CCFM).
LITE_EXITS = (2, 3, 4, 5)
RT_EXITS = (3, 5)


def m2f_lite_swin_t(*, num_classes: int = COCO_CLASSES, thing_ids: tuple = COCO_THING_IDS, exits: tuple = LITE_EXITS,
                    num_queries: int = 100, train_points: int = 12544) -> Mask2Former:
    """Lite-M2F Swin-T: Mask2Former whose encoder is Lite-DETR's "(5+1)x1" (COCO panoptic by default)."""
    return _paper("swin_t", backbone_overrides=_SWIN_OVERRIDES, encoder="lite", num_classes=num_classes,
                  thing_ids=thing_ids, exits=exits, num_queries=num_queries, train_points=train_points)


def m2f_lite_r50(*, num_classes: int = COCO_CLASSES, thing_ids: tuple = COCO_THING_IDS, exits: tuple = LITE_EXITS,
                 num_queries: int = 100, train_points: int = 12544) -> Mask2Former:
    """Lite-M2F R-50 (COCO panoptic by default)."""
    return _paper("resnet50", encoder="lite", num_classes=num_classes, thing_ids=thing_ids, exits=exits,
                  num_queries=num_queries, train_points=train_points)


def m2f_rt_swin_t(*, num_classes: int = COCO_CLASSES, thing_ids: tuple = COCO_THING_IDS, exits: tuple = RT_EXITS,
                  num_queries: int = 100, train_points: int = 12544) -> Mask2Former:
    """RT-M2F Swin-T: Mask2Former whose encoder is RT-DETR's hybrid encoder (AIFI + CCFM, d 256,
    8 heads, FFN 1024; COCO panoptic by default)."""
    return _paper("swin_t", backbone_overrides=_SWIN_OVERRIDES, encoder="rt", enc_layers=5, num_classes=num_classes,
                  thing_ids=thing_ids, exits=exits, num_queries=num_queries, train_points=train_points)


def m2f_rt_r50(*, num_classes: int = COCO_CLASSES, thing_ids: tuple = COCO_THING_IDS, exits: tuple = RT_EXITS,
               num_queries: int = 100, train_points: int = 12544) -> Mask2Former:
    """RT-M2F R-50 (COCO panoptic by default)."""
    return _paper("resnet50", encoder="rt", enc_layers=5, num_classes=num_classes, thing_ids=thing_ids, exits=exits,
                  num_queries=num_queries, train_points=train_points)


def m2f_tiny(
    *,
    num_classes: int = 9,
    thing_ids: tuple = (0, 1, 2, 3, 4),
    backbone: str = "resnet_tiny",
    hidden_dim: int = 64,
    enc_layers: int = 6,
    enc_heads: int = 4,
    enc_points: int = 4,
    enc_ffn: int = 256,
    dec_layers: int = 3,
    dec_heads: int = 4,
    dec_ffn: int = 256,
    num_queries: int = 24,
    exits: tuple = (2, 3, 4, 5, 6),
    train_points: int = 1024,
) -> Mask2Former:
    """CPU-sized Mask2Former: the same architecture, narrow and shallow in the decoder.

    ``train_points`` = 1024 is one point per mask-feature pixel at 128x128 input (Mask2Former's
    12544 is 112^2 for ~1024 px crops). The class defaults are the built-in synthetic set's
    (5 things then 4 stuff, contiguous); pass another dataset's ``num_classes``/``thing_ids``.
    """
    return Mask2Former(
        backbone=backbone_by_name(backbone),
        num_classes=num_classes,
        thing_ids=thing_ids,
        hidden_dim=hidden_dim,
        mask_dim=hidden_dim,
        enc_layers=enc_layers,
        enc_heads=enc_heads,
        enc_points=enc_points,
        enc_ffn=enc_ffn,
        dec_layers=dec_layers,
        dec_heads=dec_heads,
        dec_ffn=dec_ffn,
        num_queries=num_queries,
        norm_groups=32,
        exits=exits,
        train_points=train_points,
    )


def m2f_lite_tiny(*, num_classes: int = 9, thing_ids: tuple = (0, 1, 2, 3, 4), backbone: str = "resnet_tiny",
                  exits: tuple = LITE_EXITS, train_points: int = 1024) -> Mask2Former:
    """CPU-sized Lite-M2F: :func:`m2f_tiny`'s sizes with the Lite encoder (6 layers: 5 high-level + 1 all)."""
    return _tiny("lite", 6, num_classes=num_classes, thing_ids=thing_ids, backbone=backbone, exits=exits,
                 train_points=train_points)


def m2f_rt_tiny(*, num_classes: int = 9, thing_ids: tuple = (0, 1, 2, 3, 4), backbone: str = "resnet_tiny",
                exits: tuple = RT_EXITS, train_points: int = 1024) -> Mask2Former:
    """CPU-sized RT-M2F: :func:`m2f_tiny` with the rt encoder (AIFI with 4 heads and FFN 256 at
    d 64, CCFM; 5 layers)."""
    return _tiny("rt", 5, num_classes=num_classes, thing_ids=thing_ids, backbone=backbone, exits=exits,
                 train_points=train_points)


def _tiny(encoder: str, enc_layers: int, *, backbone: str, **settings) -> Mask2Former:
    """:func:`m2f_tiny`'s sizes (d 64, 4 heads, FFN 256, 3 decoder layers, 24 queries) with another encoder."""
    return Mask2Former(backbone=backbone_by_name(backbone), hidden_dim=64, mask_dim=64, enc_layers=enc_layers,
                       enc_heads=4, enc_ffn=256, dec_layers=3, dec_heads=4, dec_ffn=256, num_queries=24,
                       norm_groups=32, encoder=encoder, **settings)
