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

# Checkpoint kinds written by `adaseg import-weights`: --hf (a whole Mask2Former, or a whole DETR),
# --timm-backbone.
from adaseg.models.hf.detr_import import DETR_KIND
from adaseg.models.hf.importer import BACKBONE_KIND
from adaseg.models.hf.importer import MODEL_KIND as IMPORTED_KIND
from adaseg.storage.checkpoint import CheckpointError, check_state_dict, load_checkpoint, read_checkpoint_meta

PARENT_KIND = "parent"
TRAIN_STATE_KIND = "train-state"
# A model imported from Hugging Face is not a registry name: its "options" are the import config.
IMPORTED_MODEL = "hf-mask2former"
IMPORTED_DETR = "hf-detr"
# the model name an imported checkpoint kind is rebuilt as
IMPORTED_NAMES = {IMPORTED_KIND: IMPORTED_MODEL, DETR_KIND: IMPORTED_DETR}
# kinds whose tensors start with a model's state dict (a train state prefixes it with "model.")
_MODEL_PREFIX = {PARENT_KIND: "", TRAIN_STATE_KIND: "model.", IMPORTED_KIND: "", DETR_KIND: ""}
# kinds that hold a whole model ready to run: usable wherever a parent is read
MODEL_KINDS = (PARENT_KIND, IMPORTED_KIND, DETR_KIND)
# a DETR's tensors whose rows are its classes, the last row "no object" (the class head and the
# auxiliary decoders): what load_model_weights(class_rows=...) picks rows of
CLASS_HEAD_PREFIXES = ("class_embed.", "encoder.aux_decoders.")
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


def model_family(name: str) -> str:
    """The architecture family of model ``name`` (a registry name or an imported model's):
    ``"detr"`` for DETR models, ``"mask2former"`` for Mask2Former ones, else the builder's
    package (``"segmenter"``, ``"setr"``). Checkpoints move only within a family (a DETR's
    weights never fit a Mask2Former), and the optimiser defaults follow it
    (:func:`adaseg.engine.train_parent.optimiser_defaults`). Raises ValueError for an unknown name."""
    if name == IMPORTED_DETR:
        return "detr"
    if name == IMPORTED_MODEL:
        return "mask2former"
    from adaseg.models.registry import get_builder

    module = get_builder(name).__module__  # e.g. adaseg.models.detr.configs
    return module.split(".")[2] if module.startswith("adaseg.models.") else module


def build_model(name: str, options: dict[str, Any]) -> AdaptiveModel:
    """``create_model(name, **options)`` with list options turned into the tuples builders expect;
    ``hf-mask2former`` and ``hf-detr`` rebuild an imported model from its import config."""
    from adaseg.models.registry import create_model

    if name == IMPORTED_MODEL:
        from adaseg.models.hf.importer import build_mask2former

        return build_mask2former(options)
    if name == IMPORTED_DETR:
        from adaseg.models.hf.detr_import import build_detr

        return build_detr(options)

    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items()}
    return create_model(name, **kwargs)


def parent_config(name: str, options: dict[str, Any]) -> dict[str, Any]:
    return {"model": name, "options": dict(options)}


def read_model_config(path: str | os.PathLike) -> tuple[str, dict[str, Any], str]:
    """``(model name, options, kind)`` recorded in a parent or train-state checkpoint."""
    meta = read_checkpoint_meta(path, hint=recreate_hint(path))
    if meta.kind not in _MODEL_PREFIX:
        raise CheckpointError(
            f"{path} is a {meta.kind!r} checkpoint, not a parent, a training state or an imported Mask2Former or DETR"
        )
    if meta.kind in IMPORTED_NAMES:
        return IMPORTED_NAMES[meta.kind], dict(meta.config), meta.kind
    cfg = meta.config
    if "model" not in cfg or "options" not in cfg:
        raise CheckpointError(f"{path} does not record its model (config has {sorted(cfg)})")
    return cfg["model"], dict(cfg["options"]), meta.kind


def check_weights_fit(path, name: str, model_name: str) -> None:
    """Whether the weights of a checkpoint for model ``name`` may go into model ``model_name``;
    :class:`CheckpointError` (one line naming both) when not. The same name always fits. An
    imported DETR (``hf-detr``, or a parent rebuilt as one) also starts any registered DETR
    model (``detr_r50``, ``detr_tiny``: their tensors must then have the same shapes, checked
    when loaded); a checkpoint of another family never fits (a DETR's weights into a
    Mask2Former, or the reverse)."""
    if name == model_name:
        return
    try:
        have, want = model_family(name), model_family(model_name)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if have != want:
        raise CheckpointError(f"{path} is a checkpoint for model {name!r}, not {model_name!r}: a "
                              f"{_FAMILY_NAMES.get(have, have)}'s weights do not fit a {_FAMILY_NAMES.get(want, want)}")
    if name == IMPORTED_DETR and model_name != IMPORTED_DETR:
        return  # shapes checked strictly on loading (check_state_dict)
    hint = f" (pass --model {name})" if name in IMPORTED_NAMES.values() else ""
    raise CheckpointError(f"{path} is a checkpoint for model {name!r}, not {model_name!r}{hint}")


_FAMILY_NAMES = {"detr": "DETR", "mask2former": "Mask2Former", "segmenter": "Segmenter", "setr": "SETR"}


def load_model_weights(model: AdaptiveModel, path: str | os.PathLike, *, expect_model: str,
                       class_rows: list[int] | None = None):
    """Load the model weights stored in ``path`` (parent or train state) into ``model``.

    ``class_rows``: a DETR checkpoint's class-head rows to keep, in the new model's class order
    (``train-parent --init`` of a checkpoint whose classes were matched to the data's by name,
    :func:`adaseg.runs.class_match.head_rows`): applied to the class head and the auxiliary
    decoders' class rows before the strict shape check.

    Raises :class:`CheckpointError` with one line when the checkpoint is for another model
    (another registry name -- except an imported DETR into a registered DETR,
    :func:`check_weights_fit` -- or tensors that do not fit), is corrupt or holds NaN/inf. Returns
    the verified :class:`~adaseg.storage.checkpoint.CheckpointMeta`.
    """
    name, _, kind = read_model_config(path)
    check_weights_fit(path, name, expect_model)
    tensors, meta = load_checkpoint(path, hint=recreate_hint(path))
    prefix = _MODEL_PREFIX[kind]
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if class_rows is not None:
        rows = torch.as_tensor(class_rows, dtype=torch.long)
        bad = [k for k, v in state.items() if k.startswith(CLASS_HEAD_PREFIXES) and v.shape[0] != class_rows[-1] + 1]
        if bad:
            raise CheckpointError(f"{path}: {bad[0]} has {state[bad[0]].shape[0]} rows, not the "
                                  f"{class_rows[-1]} classes + no object its categories record")
        state = {k: (v[rows] if k.startswith(CLASS_HEAD_PREFIXES) else v) for k, v in state.items()}
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
    if meta.extra.get("class_map") is not None and hasattr(model, "set_class_map"):
        # a parent init-run made of a detector whose classes were matched to its data's by name
        # (adaseg.runs.class_match): its boxes are labelled in the data's classes
        model.set_class_map(meta.extra["class_map"])
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
