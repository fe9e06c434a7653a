"""Weight import for HF transformers ``DetrForObjectDetection`` checkpoints (transformers' own
ResNet backbone).

``from_hf_detr(dir)`` reads a ``save_pretrained`` directory (``config.json`` plus weights) with
json/safetensors/torch only, builds the adaseg :class:`~adaseg.models.detr.DETR` its config
describes (:mod:`adaseg.models.hf.detr_config`), renames every weight by the rules below and
loads them strictly. Every HF key is matched by exactly one rule; a key no rule knows is an
error. transformers 4.x names on disk (``backbone.conv_encoder.model.``, ``out_proj``,
per-layer ``fc1``/``fc2``) are normalised to the 5.x names first.

adaseg-only parameters (no HF counterpart): PAUMER's auxiliary decoders
(``encoder.aux_decoders.*``) keep their initial values and are reported; BatchNorm's
``num_batches_tracked`` counters (transformers' frozen BatchNorm has none) stay 0.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adaseg.models.hf.config import HFConfigError, read_config
from adaseg.models.hf.detr_config import translate_detr
from adaseg.models.hf.importer import read_hf_weights
from adaseg.models.hf.mapping import HFWeightsError, check_against

__all__ = ["DETR_KIND", "DETR_ONLY", "DetrImport", "build_detr", "from_hf_detr", "map_detr_state_dict"]

DETR_ONLY = ("encoder.aux_decoders.",)
DETR_KIND = "detr"  # the checkpoint kind ``adaseg import-weights --hf`` writes for a DETR
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")

# transformers 4.x key spellings -> 5.x
_LEGACY = (
    (re.compile(r"^model\.backbone\.conv_encoder\.model\."), "model.backbone.model."),
    (re.compile(r"\.(self_attn|encoder_attn)\.out_proj\."), r".\1.o_proj."),
    (re.compile(r"(layers\.\d+)\.fc([12])\."), r"\1.mlp.fc\2."),
)
_P = r"(weight|bias)"
_BN = r"(weight|bias|running_mean|running_var)"
_STAGE = r"^model\.backbone\.model\.encoder\.stages\.(\d+)\.layers\.(\d+)\."
_ENC = r"^model\.encoder\.layers\.(\d+)\."
_DEC = r"^model\.decoder\.layers\.(\d+)\."
_ATTN = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "o_proj": "out_proj"}

# (pattern on the 5.x key, function of the match groups -> adaseg name)
_RULES = (
    (r"^model\.backbone\.model\.embedder\.embedder\.convolution\.weight$", lambda g: "backbone.conv1.weight"),
    (rf"^model\.backbone\.model\.embedder\.embedder\.normalization\.{_BN}$", lambda g: f"backbone.bn1.{g[0]}"),
    (_STAGE + r"shortcut\.convolution\.weight$",
     lambda g: f"backbone.layer{int(g[0]) + 1}.{g[1]}.downsample.0.weight"),
    (_STAGE + rf"shortcut\.normalization\.{_BN}$",
     lambda g: f"backbone.layer{int(g[0]) + 1}.{g[1]}.downsample.1.{g[2]}"),
    (_STAGE + r"layer\.(\d+)\.convolution\.weight$",
     lambda g: f"backbone.layer{int(g[0]) + 1}.{g[1]}.conv{int(g[2]) + 1}.weight"),
    (_STAGE + rf"layer\.(\d+)\.normalization\.{_BN}$",
     lambda g: f"backbone.layer{int(g[0]) + 1}.{g[1]}.bn{int(g[2]) + 1}.{g[3]}"),
    (rf"^model\.input_projection\.{_P}$", lambda g: f"input_proj.{g[0]}"),
    (r"^model\.query_position_embeddings\.weight$", lambda g: "query_embed.weight"),
    (_ENC + rf"self_attn\.(q_proj|k_proj|v_proj|o_proj)\.{_P}$",
     lambda g: f"encoder.layers.{g[0]}.self_attn.{_ATTN[g[1]]}.{g[2]}"),
    (_ENC + rf"self_attn_layer_norm\.{_P}$", lambda g: f"encoder.layers.{g[0]}.norm1.{g[1]}"),
    (_ENC + rf"mlp\.fc([12])\.{_P}$", lambda g: f"encoder.layers.{g[0]}.ffn.linear{g[1]}.{g[2]}"),
    (_ENC + rf"final_layer_norm\.{_P}$", lambda g: f"encoder.layers.{g[0]}.norm2.{g[1]}"),
    (_DEC + rf"self_attn\.(q_proj|k_proj|v_proj|o_proj)\.{_P}$",
     lambda g: f"decoder.layers.{g[0]}.self_attn.{_ATTN[g[1]]}.{g[2]}"),
    (_DEC + rf"encoder_attn\.(q_proj|k_proj|v_proj|o_proj)\.{_P}$",
     lambda g: f"decoder.layers.{g[0]}.cross_attn.{_ATTN[g[1]]}.{g[2]}"),
    (_DEC + rf"self_attn_layer_norm\.{_P}$", lambda g: f"decoder.layers.{g[0]}.norm1.{g[1]}"),
    (_DEC + rf"encoder_attn_layer_norm\.{_P}$", lambda g: f"decoder.layers.{g[0]}.norm2.{g[1]}"),
    (_DEC + rf"mlp\.fc([12])\.{_P}$", lambda g: f"decoder.layers.{g[0]}.ffn.linear{g[1]}.{g[2]}"),
    (_DEC + rf"final_layer_norm\.{_P}$", lambda g: f"decoder.layers.{g[0]}.norm3.{g[1]}"),
    (rf"^model\.decoder\.layernorm\.{_P}$", lambda g: f"decoder.norm.{g[0]}"),
    (rf"^class_labels_classifier\.{_P}$", lambda g: f"class_embed.{g[0]}"),
    (rf"^bbox_predictor\.layers\.(\d+)\.{_P}$", lambda g: f"bbox_embed.layers.{g[0]}.{g[1]}"),
)
_COMPILED = tuple((re.compile(p), f) for p, f in _RULES)


def _normalise(key: str) -> str:
    for pattern, repl in _LEGACY:
        key = pattern.sub(repl, key)
    return key


def map_detr_state_dict(sd: dict[str, torch.Tensor], *, source: str
                        ) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """HF DETR state dict -> (adaseg state dict, {adaseg name: HF key}, HF keys dropped on
    purpose: BatchNorm ``num_batches_tracked`` counters). Unknown keys raise HFWeightsError."""
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    dropped, unknown = [], []
    for key, value in sd.items():
        norm = _normalise(key)
        if norm.endswith(".num_batches_tracked"):
            dropped.append(key)
            continue
        for pattern, name_of in _COMPILED:
            m = pattern.match(norm)
            if m:
                name = name_of(m.groups())
                if name in out:
                    raise HFWeightsError(f"{source}: {origin[name]} and {key} both map to {name}")
                out[name], origin[name] = value, key
                break
        else:
            unknown.append(key)
    if unknown:
        raise HFWeightsError(f"{source}: {len(unknown)} weights no DETR rule knows, e.g. {', '.join(unknown[:5])}")
    return out, origin, sorted(dropped)


def build_detr(config: dict[str, Any]):
    """Build an (untrained) adaseg DETR from an import config (see :mod:`adaseg.models.hf.detr_config`)."""
    from adaseg.models.backbones.resnet import ResNet
    from adaseg.models.detr import DETR

    if config.get("architecture") != "detr":
        raise HFConfigError(f"config architecture {config.get('architecture')!r} is not 'detr'")
    s = dict(config["backbone"]["settings"])
    backbone = ResNet(block=s["block"], layers=tuple(s["layers"]), widths=tuple(s["widths"]),
                      stem_width=s["stem_width"], frozen_bn=True)
    m = dict(config["model"])
    m["exits"] = tuple(m["exits"])
    return DETR(backbone=backbone, feature="s1", **m)


@dataclass
class DetrImport:
    """What :func:`from_hf_detr` found besides the model: ``config`` (build config),
    ``class_names`` (id2label by contiguous id), ``weights_file``, ``dropped`` HF keys and
    ``initialised`` adaseg keys (no HF counterpart)."""

    config: dict[str, Any]
    class_names: list[str]
    weights_file: str
    dropped: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)


def from_hf_detr(path_or_dir: str | os.PathLike, *, return_info: bool = False):
    """Build an adaseg DETR from a HF transformers ``DetrForObjectDetection`` directory.

    Args:
        path_or_dir: the ``save_pretrained`` directory (or its ``config.json``).
        return_info: also return a :class:`DetrImport`.

    Returns:
        the model in eval mode, or ``(model, DetrImport)``.

    Raises:
        HFConfigError: missing directory/files, malformed or unsupported config.json.
        HFWeightsError: weights that do not map onto the model (names listed).
    """
    path = Path(path_or_dir)
    directory = path.parent if path.name == "config.json" else path
    if not directory.is_dir():
        raise HFConfigError(f"{directory}: no such checkpoint directory")
    cfg_path = directory / "config.json"
    config = translate_detr(read_config(cfg_path), where=str(cfg_path))
    weights_path = next((directory / n for n in _WEIGHT_FILES if (directory / n).is_file()), None)
    if weights_path is None:
        raise HFConfigError(f"{directory}: no weights file (looked for {', '.join(_WEIGHT_FILES)})")
    mapped, origin, dropped = map_detr_state_dict(read_hf_weights(weights_path), source=str(weights_path))
    model = build_detr(config)
    own = model.state_dict()
    counters = tuple(k for k in own if k.endswith(".num_batches_tracked"))
    initialised = check_against(own, mapped, origin, adaseg_only=DETR_ONLY + counters, source=str(weights_path))
    full = {k: own[k] for k in initialised}
    full.update({k: v.to(own[k].dtype) for k, v in mapped.items()})
    model.load_state_dict(full, strict=True)
    model.eval()
    if not return_info:
        return model
    untrained = [k for k in initialised if not k.endswith(".num_batches_tracked")]
    return model, DetrImport(config=config, class_names=list(config["class_names"]), weights_file=str(weights_path),
                             dropped=dropped, initialised=untrained)
