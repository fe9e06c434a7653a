"""The parent model shared by every step: build it for a dataset, save it, load it back.

A parent checkpoint (``checkpoints/parent.safetensors``, kind ``"parent"``) records in its
``config`` the registry name and the builder overrides (``{"model": "m2f_tiny", "options":
{"num_classes": 9, "thing_ids": [...], "exits": [2, ...]}}``), so :func:`load_parent` rebuilds
exactly the module whose weights it holds, whatever the command line of a later step says.

What a model predicts, which modules are its encoder and which its backbone are the model's
own answers (:class:`~adaseg.models.adaptive.protocol.AdaptiveModel`: ``task``,
``encoder_modules()``, ``backbone``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from adaseg.runs.run_dir import RunDir, recreate_hint
from adaseg.models.adaptive.protocol import AdaptiveModel

# Checkpoint kinds written by `adaseg import-weights`: --hf (a whole Mask2Former), --timm-backbone.
from adaseg.models.hf.importer import BACKBONE_KIND
from adaseg.models.hf.importer import MODEL_KIND as IMPORTED_KIND
from adaseg.storage.checkpoint import CheckpointError, check_state_dict, load_checkpoint, read_checkpoint_meta

PARENT_KIND = "parent"
TRAIN_STATE_KIND = "train-state"
# A model imported from Hugging Face is not a registry name: its "options" are the import config.
IMPORTED_MODEL = "hf-mask2former"
# kinds whose tensors start with a model's state dict (a train state prefixes it with "model.")
_MODEL_PREFIX = {PARENT_KIND: "", TRAIN_STATE_KIND: "model.", IMPORTED_KIND: ""}
# kinds that hold a whole model ready to run: usable wherever a parent is read
MODEL_KINDS = (PARENT_KIND, IMPORTED_KIND)
ASSETS = Path(__file__).resolve().parent.parent / "assets"


def model_options_for(name: str, meta, exits: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Builder overrides that fit model ``name`` to dataset ``meta`` (classes, things) and exits.

    Only options the builder accepts are passed (Segmenter has no ``thing_ids``); an ``exits``
    request for a builder without that option is an error, never dropped.
    """
    from adaseg.models.registry import model_options

    accepted = model_options(name)
    options: dict[str, Any] = {}
    if "num_classes" in accepted:
        options["num_classes"] = int(meta.num_classes)
    if "thing_ids" in accepted:
        options["thing_ids"] = [int(t) for t in meta.thing_ids]
    if exits is not None:
        if "exits" not in accepted:
            raise ValueError(f"model {name!r} does not take an exits option")
        options["exits"] = [int(e) for e in exits]
    return options


def build_model(name: str, options: dict[str, Any]) -> AdaptiveModel:
    """``create_model(name, **options)`` with list options turned into the tuples builders expect;
    ``hf-mask2former`` rebuilds an imported model from its import config."""
    from adaseg.models.registry import create_model

    if name == IMPORTED_MODEL:
        from adaseg.models.hf.importer import build_mask2former

        return build_mask2former(options)

    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items()}
    return create_model(name, **kwargs)


def parent_config(name: str, options: dict[str, Any]) -> dict[str, Any]:
    return {"model": name, "options": dict(options)}


def read_model_config(path: str | os.PathLike) -> tuple[str, dict[str, Any], str]:
    """``(model name, options, kind)`` recorded in a parent or train-state checkpoint."""
    meta = read_checkpoint_meta(path, hint=recreate_hint(path))
    if meta.kind not in _MODEL_PREFIX:
        raise CheckpointError(
            f"{path} is a {meta.kind!r} checkpoint, not a parent, a training state or an imported Mask2Former"
        )
    if meta.kind == IMPORTED_KIND:
        return IMPORTED_MODEL, dict(meta.config), meta.kind
    cfg = meta.config
    if "model" not in cfg or "options" not in cfg:
        raise CheckpointError(f"{path} does not record its model (config has {sorted(cfg)})")
    return cfg["model"], dict(cfg["options"]), meta.kind


def load_model_weights(model: AdaptiveModel, path: str | os.PathLike, *, expect_model: str):
    """Load the model weights stored in ``path`` (parent or train state) into ``model``.

    Raises :class:`CheckpointError` with one line when the checkpoint is for another model
    (another registry name, or tensors that do not fit), is corrupt or holds NaN/inf. Returns
    the verified :class:`~adaseg.storage.checkpoint.CheckpointMeta`.
    """
    name, _, kind = read_model_config(path)
    if name != expect_model:
        raise CheckpointError(f"{path} is a checkpoint for model {name!r}, not {expect_model!r}")
    tensors, meta = load_checkpoint(path, hint=recreate_hint(path))
    prefix = _MODEL_PREFIX[kind]
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    check_state_dict(model.state_dict(), state, source=f"checkpoint {path}")
    model.load_state_dict(state, strict=True)
    return meta


def load_backbone_weights(model: AdaptiveModel, path: str | os.PathLike) -> dict[str, Any]:
    """Load a backbone checkpoint (``adaseg import-weights --timm-backbone``) into the model's
    backbone, strictly; the rest of the model keeps its initialisation.

    Raises :class:`CheckpointError` with one line (the first mismatched keys/shapes) when the
    backbone is another architecture. Returns the checkpoint's ``extra``.
    """
    tensors, meta = load_checkpoint(path, hint=recreate_hint(path))
    if meta.kind != BACKBONE_KIND:
        raise CheckpointError(f"{path} is a {meta.kind!r} checkpoint, not a backbone")
    backbone = model.backbone
    check_state_dict(backbone.state_dict(), tensors,
                     source=f"backbone checkpoint {path} ({meta.config.get('name')})")
    backbone.load_state_dict(tensors, strict=True)
    return meta.extra


def load_parent(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[AdaptiveModel, dict[str, Any]]:
    """Rebuild the parent (or the imported model: any kind in :data:`MODEL_KINDS`) stored at
    ``path`` in eval mode on ``device``; returns ``(model, info)``
    with ``info`` = ``{"model", "options", "fingerprint", "content_hash", "extra", "kind", "path"}``, read from
    the file as verified (so a report records the fingerprint of the weights it used).
    ``device`` is parsed as ``--device`` is (CUDA without a CUDA device: ValueError, before
    the file is read)."""
    from adaseg.utils.device import parse_device

    device = parse_device(device, name="device")
    name, options, kind = read_model_config(path)
    if kind not in MODEL_KINDS:
        raise CheckpointError(f"{path} is a {kind!r} checkpoint, not a parent or an imported model "
                              "(pass the run directory, or its checkpoints/parent.safetensors)")
    model = build_model(name, options)
    meta = load_model_weights(model, path, expect_model=name)
    # inference only: no parameter needs a gradient (FLOP counting's module tracker also
    # requires that tensors which need gradients have a graph, which no_grad does not build)
    model.requires_grad_(False)
    return model.to(device).eval(), {"model": name, "options": options, "fingerprint": meta.fingerprint,
                                     "content_hash": meta.content_hash, "extra": meta.extra, "kind": kind,
                                     "path": str(path)}


def shipped_base(model: str, data: str) -> Path | None:
    """The base checkpoint shipped in ``adaseg/assets`` for (model, data), if there is one."""
    path = ASSETS / f"{model}_{data}_base.safetensors"
    return path if path.is_file() else None


def parent_fingerprint(run: RunDir) -> str:
    """The fingerprint recorded in ``run``'s parent checkpoint (header only, fast)."""
    run.require("parent")
    return read_checkpoint_meta(run.parent_path, hint=recreate_hint(run.parent_path)).fingerprint


def verified_parent_fingerprint(run: RunDir) -> str:
    """The fingerprint of ``run``'s parent after verifying the whole file (its content hash,
    or its tensor fingerprint for a file written before content hashes, and finite weights),
    as eval's :func:`load_parent` does. What fit-gate and sweep compare the derived dataset
    with: a parent damaged after derive is refused with one line, not matched by its header."""
    run.require("parent")
    _, meta = load_checkpoint(run.parent_path, hint=recreate_hint(run.parent_path))
    return meta.fingerprint
