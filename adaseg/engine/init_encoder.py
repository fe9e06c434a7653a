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


def may_be_other_encoder(path: str, model_name: str) -> bool:
    """True when ``--init path`` (refused by name for ``model_name``) is a registered
    Mask2Former's checkpoint and ``model_name`` a registered Mask2Former: its encoder may be
    another kind than the model's, which only the built model tells
    (:func:`other_encoder_refusal` then words the refusal)."""
    try:
        name, _, _ = read_model_config(path)
        return model_family(name) == model_family(model_name) == "mask2former" and name != model_name
    except (CheckpointError, ValueError):
        return False


def other_encoder_refusal(path: str, model: nn.Module, model_name: str, name_error: CheckpointError) -> CheckpointError:
    """The refusal of ``--init path`` without ``--init-encoder`` (``name_error``: the name-based
    one of :func:`~adaseg.runs.parent.check_weights_fit`), extended, when the file is a
    Mask2Former of another encoder kind, by the first mismatched keys and the option that maps
    it. Any other mismatch keeps ``name_error`` as it is."""
    try:
        name, state = _model_state(path)
        same_family = model_family(name) == model_family(model_name) == "mask2former"
    except (CheckpointError, ValueError):
        return name_error
    have, want = encoder_kind_of(state), encoder_kind_of(model.state_dict())
    if not same_family or have is None or want is None or have == want:
        return name_error
    try:
        check_state_dict(model.state_dict(), state, source=f"checkpoint {path}")
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
