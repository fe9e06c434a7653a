"""Builders for the registered SETR configurations (one small function per name).

``setr_pup_vit_ti`` is PAUMER's App. J: SETR-PUP adapted to ViT-Ti/16 (decoder 192 channels,
2 convolutions instead of 4, upscale 4 instead of 2), 512x512 crops, ADE20K's 150 classes by
default (``num_classes=19`` for Cityscapes). ``setr_tiny`` is the CPU default on
``vit_tiny_cpu`` (patch 8): 2 stages of x2 and a final bilinear x2 to the patch size.
"""

from __future__ import annotations

from adaseg.models.backbones.timm_checkpoint import load_timm_checkpoint
from adaseg.models.backbones.vit import vit_ti, vit_tiny_cpu
from adaseg.models.setr.model import SETR

__all__ = ["setr_pup_vit_ti", "setr_tiny"]


def setr_pup_vit_ti(*, num_classes: int = 150, img_size: int = 512, drop_path_rate: float = 0.1,
                    exits: tuple = tuple(range(2, 13)), backbone_weights: str | None = None) -> SETR:
    """SETR-PUP on ViT-Ti/16 as PAUMER adapts it: PUP with 192 channels, 2 stages of x4.

    ``backbone_weights``: optional timm ``vit_tiny_patch16_224`` checkpoint file for the encoder.
    """
    encoder = vit_ti(img_size=img_size, drop_path_rate=drop_path_rate)
    if backbone_weights is not None:
        load_timm_checkpoint(encoder, backbone_weights)
    return SETR(encoder=encoder, num_classes=num_classes, channels=192, num_convs=2, up_scale=4, exits=exits)


def setr_tiny(*, num_classes: int = 8, img_size: int = 128, embed_dim: int = 128, depth: int = 6,
              num_heads: int = 4, patch_size: int = 8, channels: int = 64,
              exits: tuple = (2, 3, 4, 5, 6)) -> SETR:
    """CPU-sized SETR-PUP: ``vit_tiny_cpu`` (patch 8, 128 wide, 6 layers) + PUP (64 channels, 2 x2 stages)."""
    encoder = vit_tiny_cpu(img_size=img_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                           patch_size=patch_size)
    return SETR(encoder=encoder, num_classes=num_classes, channels=channels, num_convs=2, up_scale=2, exits=exits)
