"""Weight import: HuggingFace Mask2Former checkpoints and timm backbone checkpoints.

``from_hf_mask2former(dir)`` reads a ``save_pretrained`` directory (``config.json`` plus
``model.safetensors``, a sharded ``model.safetensors.index.json`` or ``pytorch_model.bin``)
with json/safetensors/torch only -- transformers is not needed -- builds the adaseg
:class:`~adaseg.models.mask2former.Mask2Former` its config describes, renames every weight
(:mod:`adaseg.models.hf.mapping`) and loads them strictly. The only adaseg parameters a HF
checkpoint cannot provide are the PAUMER auxiliary decoders (``ADASEG_ONLY``); they keep their
initial values and are reported.

``build_mask2former(config)`` rebuilds a model from the JSON config an imported checkpoint
stores, so ``load_into(build_mask2former(meta.config), path)`` reloads it.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adaseg.models.hf.config import HFConfigError, read_config, translate
from adaseg.models.hf.mapping import HFWeightsError, check_against, map_state_dict

__all__ = [
    "ADASEG_ONLY", "HFConfigError", "HFWeightsError", "HFImport", "build_mask2former",
    "from_hf_mask2former", "from_timm_backbone", "read_hf_weights",
]

# adaseg parameters with no HF counterpart (PAUMER's per-layer auxiliary decoders)
ADASEG_ONLY = ("pixel_decoder.transformer.aux_decoders.",)

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass
class HFImport:
    """What :func:`from_hf_mask2former` found besides the model.

    ``config``: adaseg build config (JSON-able; :func:`build_mask2former` input);
    ``class_names``: id2label by contiguous id; ``thing_ids``: thing classes;
    ``weights_file``: the file read; ``dropped``: HF keys left out on purpose;
    ``initialised``: adaseg keys that keep their initial values.
    """

    config: dict[str, Any]
    class_names: list[str]
    thing_ids: list[int]
    weights_file: str
    dropped: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)


def build_mask2former(config: dict[str, Any]):
    """Build an (untrained) adaseg Mask2Former from an import config (see :mod:`adaseg.models.hf.config`)."""
    from adaseg.models.backbones.swin import SwinTransformer
    from adaseg.models.mask2former import Mask2Former

    if config.get("architecture") != "mask2former":
        raise HFConfigError(f"config architecture {config.get('architecture')!r} is not 'mask2former'")
    bb = config["backbone"]
    if bb.get("name") != "swin":
        raise HFConfigError(f"config backbone {bb.get('name')!r} is not 'swin'")
    s = dict(bb["settings"])
    backbone = SwinTransformer(
        embed_dim=s["embed_dim"], depths=tuple(s["depths"]), num_heads=tuple(s["num_heads"]), window=s["window"],
        patch=s["patch"], mlp_ratio=s["mlp_ratio"], out_norms=s["out_norms"], always_shift=s["always_shift"],
    )
    m = dict(config["model"])
    m["thing_ids"] = tuple(m["thing_ids"])
    m["exits"] = tuple(m["exits"])
    return Mask2Former(backbone=backbone, **m)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (library errors can span many lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _find_weights(directory: Path) -> Path:
    for name in _WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise HFConfigError(f"{directory}: no weights file (looked for {', '.join(_WEIGHT_FILES)})")


def read_hf_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a HF weights file: ``.safetensors``, a safetensors index (shards) or a torch ``.bin``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        if path.name.endswith(".index.json"):
            try:
                weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise HFConfigError(f"{path}: malformed safetensors index ({exc!r})") from None
            sd: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                sd.update(load_file(str(path.parent / shard), device="cpu"))
            return sd
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except SafetensorError as exc:
        raise HFConfigError(f"{path}: not a readable safetensors file ({first_line(exc)})") from None
    except FileNotFoundError as exc:
        raise HFConfigError(f"{path}: missing file ({exc.filename})") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:  # torch.load's errors for a corrupt/foreign file
        raise HFConfigError(f"{path}: not a readable torch weights file ({first_line(exc)})") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise HFConfigError(f"{path}: does not hold a flat name -> tensor state dict")
    return obj


def from_hf_mask2former(path_or_dir: str | os.PathLike, *, thing_ids=None, return_info: bool = False):
    """Build an adaseg Mask2Former from a HF transformers checkpoint directory.

    Args:
        path_or_dir: the ``save_pretrained`` directory (or its ``config.json``).
        thing_ids: contiguous ids of thing classes; None recognises COCO panoptic and
            Cityscapes label sets and refuses others (pass ``()`` for "all stuff").
        return_info: also return an :class:`HFImport` (class names, dropped keys, config).

    Returns:
        the model in eval mode, or ``(model, HFImport)`` with ``return_info``.

    Raises:
        HFConfigError: missing directory/files, malformed or unsupported config.json.
        HFWeightsError: weights that do not map onto the model (names listed).
    """
    path = Path(path_or_dir)
    directory = path.parent if path.name == "config.json" else path
    if not directory.is_dir():
        raise HFConfigError(f"{directory}: no such checkpoint directory")
    cfg_path = directory / "config.json"
    config = translate(read_config(cfg_path), where=str(cfg_path), thing_ids=thing_ids)
    weights_path = _find_weights(directory)
    raw = read_hf_weights(weights_path)
    mapped, origin, dropped = map_state_dict(raw, window=config["backbone"]["settings"]["window"], source=str(weights_path))
    model = build_mask2former(config)
    own = model.state_dict()
    initialised = check_against(own, mapped, origin, adaseg_only=ADASEG_ONLY, source=str(weights_path))
    full = {k: own[k] for k in initialised}
    full.update({k: v.to(own[k].dtype) for k, v in mapped.items()})
    model.load_state_dict(full, strict=True)
    model.eval()
    if not return_info:
        return model
    info = HFImport(
        config=config,
        class_names=list(config["class_names"]),
        thing_ids=list(config["model"]["thing_ids"]),
        weights_file=str(weights_path),
        dropped=dropped,
        initialised=initialised,
    )
    return model, info


def from_timm_backbone(path: str | os.PathLike, *, name: str):
    """Build backbone ``name`` (see ``adaseg.models.backbones.list_backbones``) and load a timm
    checkpoint into it strictly. Returns ``(backbone in eval mode, report)``; the report is
    :func:`~adaseg.models.backbones.load_timm_checkpoint`'s (dropped / initialised keys).

    Raises:
        ValueError: unknown backbone name; FileNotFoundError / CheckpointMismatchError from
            the loader (missing file, mismatched keys or shapes, named).
    """
    from adaseg.models.backbones import build_backbone, load_timm_checkpoint

    backbone = build_backbone(name)
    report = load_timm_checkpoint(backbone, path)
    return backbone.eval(), report


# Checkpoint kinds written by ``adaseg import-weights``.
MODEL_KIND = "mask2former"
BACKBONE_KIND = "backbone"
