"""Translate a HuggingFace transformers Mask2Former ``config.json`` into adaseg build settings.

Only what adaseg's Mask2Former computes the same way is accepted; anything else is refused
with one line naming the field and value (a config value is never silently ignored). Fields
that only matter for HF's training loss or for other backbones are checked where they could
change the forward pass and otherwise left alone (listed in :data:`_TRAINING_ONLY`).

The result is a plain JSON-able dict, ``{"architecture": "mask2former", "backbone": {...},
"model": {...}}``, that :func:`adaseg.models.hf.importer.build_mask2former` turns into a model
and that adaseg checkpoints store as their config.
"""

from __future__ import annotations

import json
import os
from typing import Any

# Mask2Former fields used only by HF's loss / image processor, never by the forward pass.
_TRAINING_ONLY = (
    "class_weight", "mask_weight", "dice_weight", "no_object_weight", "train_num_points",
    "oversample_ratio", "importance_sample_ratio", "ignore_value", "use_auxiliary_loss",
    "init_std", "init_xavier_std", "output_auxiliary_logits",
)

# Cityscapes (19 train classes, HF id2label order): things are person .. bicycle.
_CITYSCAPES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)


class HFConfigError(ValueError):
    """The HF config is malformed or describes a model adaseg cannot reproduce exactly."""


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``config.json``; one clear error for a missing file or malformed JSON."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise HFConfigError(f"{path}: no such file (a HF checkpoint directory holds config.json)")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HFConfigError(f"{path}: malformed JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise HFConfigError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def _get(cfg: dict, key: str, default, kind, where: str):
    value = cfg.get(key, default)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise HFConfigError(f"{where}: {key} must be an integer, got {value!r}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise HFConfigError(f"{where}: {key} must be a number, got {value!r}")
    if kind is bool and not isinstance(value, bool):
        raise HFConfigError(f"{where}: {key} must be true/false, got {value!r}")
    if kind is list and not (isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise HFConfigError(f"{where}: {key} must be a list of integers, got {value!r}")
    return value


def _require(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise HFConfigError(f"{where}: unsupported configuration: {message}")


def _swin_settings(bb: Any, where: str) -> dict[str, Any]:
    """SwinConfig -> adaseg ``SwinTransformer`` keyword arguments (HF defaults where absent)."""
    if not isinstance(bb, dict):
        raise HFConfigError(f"{where}: backbone_config must be an object, got {type(bb).__name__}")
    model_type = bb.get("model_type")
    _require(model_type == "swin", where, f"backbone model_type {model_type!r} (adaseg imports Swin backbones only)")
    w = f"{where} backbone_config"
    depths = _get(bb, "depths", [2, 2, 6, 2], list, w)
    heads = _get(bb, "num_heads", [3, 6, 12, 24], list, w)
    _require(len(depths) == 4 and len(heads) == 4, w, f"depths {depths} / num_heads {heads} (4 stages needed)")
    _require(_get(bb, "num_channels", 3, int, w) == 3, w, f"num_channels {bb.get('num_channels')} (RGB only)")
    _require(not _get(bb, "use_absolute_embeddings", False, bool, w), w, "use_absolute_embeddings true")
    _require(_get(bb, "qkv_bias", True, bool, w), w, "qkv_bias false")
    _require(bb.get("hidden_act", "gelu") == "gelu", w, f"hidden_act {bb.get('hidden_act')!r} (gelu only)")
    eps = _get(bb, "layer_norm_eps", 1e-5, float, w)
    _require(abs(eps - 1e-5) < 1e-12, w, f"layer_norm_eps {eps} (1e-5 only)")
    out = bb.get("out_features", ["stage1", "stage2", "stage3", "stage4"])
    _require(out == ["stage1", "stage2", "stage3", "stage4"], w, f"out_features {out} (all four stages needed)")
    embed = _get(bb, "embed_dim", 96, int, w)
    dims = [embed * 2**i for i in range(4)]
    bad = [(d, h) for d, h in zip(dims, heads) if h <= 0 or d % h]
    _require(not bad, w, f"stage widths {dims} not divisible by num_heads {heads}")
    return {
        "embed_dim": embed,
        "depths": list(depths),
        "num_heads": list(heads),
        "window": _get(bb, "window_size", 7, int, w),
        "patch": _get(bb, "patch_size", 4, int, w),
        "mlp_ratio": float(_get(bb, "mlp_ratio", 4.0, float, w)),
        "out_norms": True,
        "always_shift": True,  # HF's SwinBackbone partitions with always_partition=True
    }


def class_labels(cfg: dict, where: str) -> list[str]:
    """``id2label`` as a list indexed by contiguous class id (ids must be 0..K-1)."""
    id2label = cfg.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise HFConfigError(f"{where}: id2label is missing or empty (it gives the number of classes)")
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except ValueError:
        raise HFConfigError(f"{where}: id2label keys must be integers, got {sorted(id2label)[:5]}") from None
    if sorted(by_id) != list(range(len(by_id))) or len(by_id) != len(id2label):
        raise HFConfigError(f"{where}: id2label ids must be 0..{len(id2label) - 1} once each, got {sorted(id2label)[:5]}...")
    return [by_id[i] for i in range(len(by_id))]


def default_thing_ids(names: list[str]) -> tuple[int, ...] | None:
    """Thing classes of the label sets adaseg recognises (COCO panoptic, Cityscapes), else None."""
    if len(names) == 133 and names[0] == "person" and names[79] == "toothbrush":
        return tuple(range(80))  # COCO panoptic: the 80 thing categories come first
    if tuple(n.lower() for n in names) == _CITYSCAPES:
        return tuple(range(11, 19))
    return None


def translate(cfg: dict[str, Any], *, where: str, thing_ids: tuple[int, ...] | None) -> dict[str, Any]:
    """HF Mask2Former config -> adaseg build config (see module doc).

    Args:
        cfg: parsed ``config.json``.
        where: file name for error lines.
        thing_ids: contiguous thing class ids, or None to recognise COCO / Cityscapes labels.

    Raises:
        HFConfigError: not a Mask2Former config, a field adaseg cannot honour, or unknown
            thing classes with ``thing_ids=None``.
    """
    mt = cfg.get("model_type")
    if mt != "mask2former":
        raise HFConfigError(f"{where}: model_type is {mt!r}, expected 'mask2former'")
    archs = cfg.get("architectures") or ["Mask2FormerForUniversalSegmentation"]
    _require(archs == ["Mask2FormerForUniversalSegmentation"], where,
             f"architectures {archs} (only Mask2FormerForUniversalSegmentation has a class head)")
    if cfg.get("use_timm_backbone") or cfg.get("backbone"):
        raise HFConfigError(f"{where}: unsupported configuration: a named/timm backbone "
                            f"({cfg.get('backbone')!r}); adaseg imports an embedded Swin backbone_config only")
    backbone = _swin_settings(cfg.get("backbone_config"), where)

    feature = _get(cfg, "feature_size", 256, int, where)
    hidden = _get(cfg, "hidden_dim", 256, int, where)
    mask_dim = _get(cfg, "mask_feature_size", 256, int, where)
    heads = _get(cfg, "num_attention_heads", 8, int, where)
    enc_layers = _get(cfg, "encoder_layers", 6, int, where)
    dec_layers = _get(cfg, "decoder_layers", 10, int, where)
    _require(feature == hidden, where, f"feature_size {feature} != hidden_dim {hidden} (one width for pixel decoder and decoder)")
    _require(not _get(cfg, "enforce_input_projection", False, bool, where), where, "enforce_input_projection true")
    _require(not _get(cfg, "pre_norm", False, bool, where), where, "pre_norm true (post-norm decoder only)")
    _require(cfg.get("activation_function", "relu") == "relu", where,
             f"activation_function {cfg.get('activation_function')!r} (relu only)")
    _require(_get(cfg, "common_stride", 4, int, where) == 4, where, f"common_stride {cfg.get('common_stride')} (4 only)")
    strides = cfg.get("feature_strides", [4, 8, 16, 32])
    _require(list(strides) == [4, 8, 16, 32], where, f"feature_strides {strides} ([4, 8, 16, 32] only)")
    _require(feature % 32 == 0, where, f"feature_size {feature} (GroupNorm(32) needs a multiple of 32)")
    _require(heads > 0 and feature % heads == 0, where, f"num_attention_heads {heads} does not divide {feature}")
    _require(enc_layers >= 1, where, f"encoder_layers {enc_layers}")
    _require(dec_layers >= 2, where, f"decoder_layers {dec_layers} (HF counts the query prediction as one)")
    dropout = float(_get(cfg, "dropout", 0.0, float, where))
    _require(dropout == 0.0, where, f"dropout {dropout} (Mask2Former trains without dropout; adaseg's decoder has none)")

    names = class_labels(cfg, where)
    if thing_ids is None:
        thing_ids = default_thing_ids(names)
        if thing_ids is None:
            raise HFConfigError(
                f"{where}: cannot tell thing from stuff classes for these {len(names)} labels; "
                f"pass thing_ids (CLI: --thing-ids 0,1,... or --thing-ids none)"
            )
    thing_ids = tuple(int(t) for t in thing_ids)
    bad = [t for t in thing_ids if not 0 <= t < len(names)]
    if bad:
        raise HFConfigError(f"{where}: thing ids {bad} are outside 0..{len(names) - 1}")

    model = {
        "num_classes": len(names),
        "thing_ids": list(thing_ids),
        "hidden_dim": hidden,
        "mask_dim": mask_dim,
        "enc_layers": enc_layers,
        "enc_heads": heads,
        "enc_points": 4,  # HF hard-codes 4 sampling points and 3 levels
        "enc_ffn": _get(cfg, "encoder_feedforward_dim", 1024, int, where),
        "dec_layers": dec_layers - 1,  # HF's decoder_layers counts the prediction from the raw queries
        "dec_heads": heads,
        "dec_ffn": _get(cfg, "dim_feedforward", 2048, int, where),
        "num_queries": _get(cfg, "num_queries", 100, int, where),
        "norm_groups": 32,
        "exits": list(range(2, enc_layers + 1)) if enc_layers >= 2 else [1],
        "train_points": _get(cfg, "train_num_points", 12544, int, where),
    }
    return {
        "architecture": "mask2former",
        "backbone": {"name": "swin", "settings": backbone},
        "model": model,
        "class_names": names,
    }
