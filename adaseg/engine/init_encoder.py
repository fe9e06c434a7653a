"""``train-parent --init CKPT --init-encoder KIND``: start a Mask2Former of one encoder kind
from a checkpoint of another (e.g. Lite-M2F from a trained deformable M2F).

Without ``--init-encoder`` such a checkpoint is refused (one line: the two registered names,
the first mismatched keys, and this option as the way to map it). With it the weights go
through :func:`adaseg.models.mask2former.encoder_mapping.map_encoder_state` (deform <-> lite:
layers one to one; to or from rt: everything outside the encoder, the encoder fresh), are
loaded strictly, and what was mapped, loaded and left fresh is returned for config.json and
the run's start line. Every check runs before anything is written.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from adaseg.models.mask2former.encoder_mapping import (EncoderMapping, EncoderMappingError, encoder_kind_of,
                                                       map_encoder_state)
from adaseg.runs.parent import TRAIN_STATE_KIND, model_family, read_model_config
from adaseg.runs.run_dir import recreate_hint
from adaseg.storage.checkpoint import CheckpointError, check_state_dict, load_checkpoint


def _model_state(path: str) -> tuple[str, dict]:
    """(recorded model name, the file's model state dict without a train state's prefix)."""
    name, _, kind = read_model_config(path)
    tensors, _ = load_checkpoint(path, hint=recreate_hint(path))
    prefix = "model." if kind == TRAIN_STATE_KIND else ""  # a training state prefixes the model's tensors
    return name, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def other_encoder_refusal(path: str, model_name: str, name_error: CheckpointError) -> CheckpointError:
    """The refusal of ``--init path`` without ``--init-encoder`` (``name_error``: the name-based
    one of :func:`~adaseg.runs.parent.check_weights_fit`), extended, when the file is a
    registered Mask2Former of another encoder kind than ``model_name``'s, by the first mismatched
    keys and the option that maps it. Needs no data and writes nothing: the file's key names are
    read from its header, the model's from a build on the meta device (default options: the keys
    do not depend on the class count). Any other mismatch keeps ``name_error`` as it is."""
    import torch
    from safetensors import safe_open

    from adaseg.runs.parent import IMPORTED_NAMES, build_model

    try:
        name, _, kind = read_model_config(path)
        if name in IMPORTED_NAMES.values() or model_name in IMPORTED_NAMES.values():
            return name_error
        if not model_family(name) == model_family(model_name) == "mask2former":
            return name_error
        prefix = "model." if kind == TRAIN_STATE_KIND else ""
        with safe_open(str(path), framework="pt") as f:
            keys = [k[len(prefix):] for k in f.keys() if k.startswith(prefix)]
        with torch.device("meta"):
            target = build_model(model_name, {}).state_dict()
    except (CheckpointError, ValueError, OSError):
        return name_error
    have, want = encoder_kind_of(keys), encoder_kind_of(target)
    if have is None or want is None or have == want:
        return name_error
    empty = torch.empty(0, device="meta")
    try:  # key names only: a tensor the two share counts as fitting here
        check_state_dict(target, {k: target.get(k, empty) for k in keys}, source=f"checkpoint {path}")
    except CheckpointError as keys_error:
        return CheckpointError(f"{name_error} (encoder {have!r}, the model's {want!r}): {keys_error}; pass "
                               f"--init-encoder {have} to map its encoder onto the model's")
    return name_error


def load_across_encoders(model: nn.Module, path: str, model_name: str, source_kind: str) -> EncoderMapping:
    """Load checkpoint ``path`` (a Mask2Former whose encoder is ``source_kind``) into ``model``
    (a Mask2Former of registered name ``model_name`` with another encoder kind), strictly after
    mapping; raises :class:`CheckpointError` (one line) before touching ``model`` when it cannot."""
    name, state = _model_state(path)
    try:
        families = model_family(name), model_family(model_name)
    except ValueError as exc:
        raise CheckpointError(f"--init {path}: {exc}") from None
    if families != ("mask2former", "mask2former"):
        raise CheckpointError(f"--init-encoder maps one Mask2Former encoder kind onto another; --init {path} holds "
                              f"a {families[0]} ({name!r}) and --model {model_name} is a {families[1]}")
    target = model.state_dict()
    target_kind = encoder_kind_of(target)
    try:
        mapped, mapping = map_encoder_state(state, target, source_kind=source_kind, target_kind=target_kind)
    except EncoderMappingError as exc:
        raise CheckpointError(f"--init {path} ({name!r}) into --model {model_name}: {exc}") from None
    model.load_state_dict(mapped, strict=True)
    return mapping


def mapping_record(mapping: EncoderMapping | None) -> dict[str, Any] | None:
    """config.json's ``init_encoder`` entry (None without --init-encoder)."""
    return None if mapping is None else mapping.summary()
