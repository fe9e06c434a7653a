"""Translate a HuggingFace transformers ``DetrForObjectDetection`` ``config.json`` (transformers'
own ResNet backbone, ``use_timm_backbone: false``) into adaseg build settings.

Only what adaseg's DETR computes the same way is accepted; anything else is refused with one
line naming the field and value. Fields that only shape HF's training (loss weights, dropout,
layer drop, init) are listed in :data:`_TRAINING_ONLY` and do not change the eval-mode forward.

The result, ``{"architecture": "detr", "backbone": {...}, "model": {...}, "class_names": [...]}``,
is JSON-able: :func:`adaseg.models.hf.detr_import.build_detr` turns it into a model.
"""

from __future__ import annotations

from typing import Any

from adaseg.models.hf.config import HFConfigError, _get, _require, class_labels

# DETR fields used only by HF's loss, dropout or initialisation, never by the eval forward pass.
_TRAINING_ONLY = (
    "class_cost", "bbox_cost", "giou_cost", "mask_loss_coefficient", "dice_loss_coefficient",
    "bbox_loss_coefficient", "giou_loss_coefficient", "eos_coefficient", "attention_dropout",
    "activation_dropout", "encoder_layerdrop", "decoder_layerdrop", "init_std", "init_xavier_std",
)


def _resnet_settings(bb: Any, where: str) -> dict[str, Any]:
    """ResNetConfig -> adaseg ``ResNet`` keyword arguments (HF defaults where absent)."""
    if not isinstance(bb, dict):
        raise HFConfigError(f"{where}: backbone_config must be an object, got {type(bb).__name__}")
    w = f"{where} backbone_config"
    _require(bb.get("model_type") == "resnet", w, f"model_type {bb.get('model_type')!r} (adaseg's DETR imports "
                                                  "transformers' ResNet backbones only)")
    layer_type = bb.get("layer_type", "bottleneck")
    _require(layer_type in ("bottleneck", "basic"), w, f"layer_type {layer_type!r}")
    depths = _get(bb, "depths", [3, 4, 6, 3], list, w)
    sizes = _get(bb, "hidden_sizes", [256, 512, 1024, 2048], list, w)
    _require(len(depths) == 4 and len(sizes) == 4, w, f"depths {depths} / hidden_sizes {sizes} (4 stages needed)")
    expansion = 4 if layer_type == "bottleneck" else 1
    _require(all(s > 0 and s % expansion == 0 for s in sizes), w,
             f"hidden_sizes {sizes} (a bottleneck's output is 4 x its width)")
    _require(_get(bb, "num_channels", 3, int, w) == 3, w, f"num_channels {bb.get('num_channels')} (RGB only)")
    _require(bb.get("hidden_act", "relu") == "relu", w, f"hidden_act {bb.get('hidden_act')!r} (relu only)")
    _require(not _get(bb, "downsample_in_first_stage", False, bool, w), w, "downsample_in_first_stage true")
    _require(not _get(bb, "downsample_in_bottleneck", False, bool, w), w,
             "downsample_in_bottleneck true (adaseg's ResNet strides on the 3x3 conv, v1.5)")
    out = bb.get("out_features", ["stage4"])
    _require(out == ["stage4"], w, f"out_features {out} (DETR reads the last stage only)")
    return {"block": layer_type, "layers": list(depths), "widths": [s // expansion for s in sizes],
            "stem_width": _get(bb, "embedding_size", 64, int, w)}


def translate_detr(cfg: dict[str, Any], *, where: str) -> dict[str, Any]:
    """HF DETR config -> adaseg import config (see the module docstring)."""
    _require(cfg.get("model_type") == "detr", where, f"model_type {cfg.get('model_type')!r} (expected 'detr')")
    _require(not _get(cfg, "use_timm_backbone", True, bool, where), where,
             "use_timm_backbone true (adaseg reads transformers' own ResNet layout: the checkpoint's "
             "no_timm revision, or a model built with use_timm_backbone=False)")
    _require(not cfg.get("dilation", False), where, "dilation true (DC5 is not implemented)")
    _require(cfg.get("position_embedding_type", "sine") == "sine", where,
             f"position_embedding_type {cfg.get('position_embedding_type')!r} (sine only)")
    _require(cfg.get("activation_function", "relu") == "relu", where,
             f"activation_function {cfg.get('activation_function')!r} (relu only)")
    # transformers' decoder with auxiliary_loss feeds each layer's *normed* output to the next
    # layer, which DETR does not: the forward would differ from the checkpoint's own.
    _require(not _get(cfg, "auxiliary_loss", False, bool, where), where,
             "auxiliary_loss true (transformers then normalises between decoder layers, unlike DETR; set it false)")
    heads = _get(cfg, "encoder_attention_heads", 8, int, where)
    ffn = _get(cfg, "encoder_ffn_dim", 2048, int, where)
    _require(_get(cfg, "decoder_attention_heads", 8, int, where) == heads, where,
             "decoder_attention_heads differs from encoder_attention_heads (adaseg's DETR has one)")
    _require(_get(cfg, "decoder_ffn_dim", 2048, int, where) == ffn, where,
             "decoder_ffn_dim differs from encoder_ffn_dim (adaseg's DETR has one)")
    d_model = _get(cfg, "d_model", 256, int, where)
    _require(d_model > 0 and d_model % heads == 0 and d_model % 2 == 0, where,
             f"d_model {d_model} with {heads} heads")
    enc_layers = _get(cfg, "encoder_layers", 6, int, where)
    _require(enc_layers >= 2, where, f"encoder_layers {enc_layers} (exits need at least 2)")
    names = class_labels(cfg, where)
    return {
        "architecture": "detr",
        "backbone": {"name": "resnet", "settings": _resnet_settings(cfg.get("backbone_config"), where)},
        "model": {"num_classes": len(names), "hidden_dim": d_model, "heads": heads, "enc_layers": enc_layers,
                  "dec_layers": _get(cfg, "decoder_layers", 6, int, where), "ffn": ffn,
                  "dropout": float(_get(cfg, "dropout", 0.1, float, where)),
                  "num_queries": _get(cfg, "num_queries", 100, int, where),
                  "exits": list(range(2, enc_layers + 1))},
        "class_names": names,
    }
