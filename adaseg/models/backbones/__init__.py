"""Backbones with timm parameter names: ResNet, Swin, ViT, and small CPU variants.

``build_backbone(name, **overrides)`` builds one by name; :data:`TIMM_NAMES` gives the timm
model whose checkpoints load into it with :func:`load_timm_checkpoint`.
"""

from __future__ import annotations

from adaseg.models.backbones.resnet import ResNet, resnet50, resnet_tiny
from adaseg.models.backbones.swin import SwinTransformer, swin_b, swin_s, swin_t, swin_tiny_cpu
from adaseg.models.backbones.timm_checkpoint import CheckpointMismatchError, load_timm_checkpoint
from adaseg.models.backbones.vit import VisionTransformer, vit_b, vit_s, vit_ti, vit_tiny_cpu

__all__ = [
    "BACKBONES", "TIMM_NAMES", "build_backbone", "list_backbones", "load_timm_checkpoint",
    "CheckpointMismatchError", "ResNet", "SwinTransformer", "VisionTransformer",
]

BACKBONES = {
    "resnet50": resnet50,
    "resnet_tiny": resnet_tiny,
    "swin_t": swin_t,
    "swin_s": swin_s,
    "swin_b": swin_b,
    "swin_tiny_cpu": swin_tiny_cpu,
    "vit_ti": vit_ti,
    "vit_s": vit_s,
    "vit_b": vit_b,
    "vit_tiny_cpu": vit_tiny_cpu,
}

# Backbone name -> the timm model whose state dict loads into it (CPU variants have none).
TIMM_NAMES = {
    "resnet50": "resnet50",
    "swin_t": "swin_tiny_patch4_window7_224",
    "swin_s": "swin_small_patch4_window7_224",
    "swin_b": "swin_base_patch4_window7_224",
    "vit_ti": "vit_tiny_patch16_224",
    "vit_s": "vit_small_patch16_224",
    "vit_b": "vit_base_patch16_224",
}


def list_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone`."""
    return sorted(BACKBONES)


def build_backbone(name: str, **overrides):
    """Build backbone ``name`` with constructor ``overrides`` (e.g. ``drop_path_rate=0.1``)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())}")
    return BACKBONES[name](**overrides)
