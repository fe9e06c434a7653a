"""Builders for the registered Segmenter configurations (one small function per name).

Paper configurations follow Segmenter / PAUMER: ViT-Ti/16 or ViT-S/16 encoder (timm names,
ImageNet weights load with :func:`adaseg.models.backbones.load_timm_checkpoint`), a 2-layer
mask transformer as wide as the encoder, 512x512 crops, ADE20K's 150 classes by default
(pass ``num_classes=19`` for Cityscapes).
"""

from __future__ import annotations

from adaseg.models.backbones.timm_checkpoint import load_timm_checkpoint
from adaseg.models.backbones.vit import VisionTransformer, vit_s, vit_ti, vit_tiny_cpu
from adaseg.models.segmenter.model import Segmenter

__all__ = ["segmenter_vit_ti", "segmenter_vit_s", "segmenter_tiny"]


def _with_weights(encoder: VisionTransformer, backbone_weights: str | None) -> VisionTransformer:
    # A timm ViT checkpoint (e.g. vit_tiny_patch16_224 .safetensors); its 14x14 position grid
    # is resampled to the crop's grid, the classifier head dropped (see load_timm_checkpoint).
    if backbone_weights is not None:
        load_timm_checkpoint(encoder, backbone_weights)
    return encoder


def segmenter_vit_ti(*, num_classes: int = 150, img_size: int = 512, drop_path_rate: float = 0.1,
                     exits: tuple = tuple(range(2, 13)), backbone_weights: str | None = None) -> Segmenter:
    """Segmenter ViT-Ti/16 + mask transformer (2 layers, 192 wide, 3 heads).

    ``backbone_weights``: optional timm ``vit_tiny_patch16_224`` checkpoint file for the encoder.
    """
    encoder = _with_weights(vit_ti(img_size=img_size, drop_path_rate=drop_path_rate), backbone_weights)
    return Segmenter(encoder=encoder, num_classes=num_classes, dec_layers=2, exits=exits)


def segmenter_vit_s(*, num_classes: int = 150, img_size: int = 512, drop_path_rate: float = 0.1,
                    exits: tuple = tuple(range(2, 13)), backbone_weights: str | None = None) -> Segmenter:
    """Segmenter ViT-S/16 + mask transformer (2 layers, 384 wide, 6 heads).

    ``backbone_weights``: optional timm ``vit_small_patch16_224`` checkpoint file for the encoder.
    """
    encoder = _with_weights(vit_s(img_size=img_size, drop_path_rate=drop_path_rate), backbone_weights)
    return Segmenter(encoder=encoder, num_classes=num_classes, dec_layers=2, exits=exits)


def segmenter_tiny(*, num_classes: int = 8, img_size: int = 128, embed_dim: int = 128, depth: int = 6,
                   num_heads: int = 4, patch_size: int = 8, exits: tuple = (2, 3, 4, 5, 6)) -> Segmenter:
    """CPU-sized Segmenter: ``vit_tiny_cpu`` (patch 8, 128 wide, 6 layers) + 2-layer decoder."""
    encoder = vit_tiny_cpu(img_size=img_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                           patch_size=patch_size)
    return Segmenter(encoder=encoder, num_classes=num_classes, dec_layers=2, exits=exits)
