"""Checkpoints: a ``.safetensors`` file of tensors plus the JSON that says what they are.

Layout of one checkpoint ``NAME.safetensors``:

* the tensors (a model's ``state_dict``, or any named tensors), saved with safetensors;
* the file's metadata holds one entry, ``"adaseg"``: a JSON object with ``format`` (1),
  ``kind`` (e.g. ``"parent"``, ``"gate"``), ``config`` (the constructor settings needed to
  rebuild the module), ``fingerprint``, any ``extra`` fields and ``content_sha256``, the
  file's content hash (:mod:`adaseg.storage.integrity`), checked by :func:`load_checkpoint`
  on every load. Because it lives inside the one file, the tensors and their description
  are replaced together, atomically;
* ``NAME.json`` next to it: the same JSON, for people and tools that do not read
  safetensors headers. It is a copy; the safetensors metadata is the source of truth.

The **fingerprint** is a SHA-256 over the tensors' names, dtypes, shapes and bytes (in name
order), so two checkpoints with identical weights share it whatever their metadata. Later
steps record the fingerprint of the parent they were made from (the derived dataset, each
gate) and refuse to mix artefacts of different parents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from adaseg.storage.atomic import atomic_write_json
from adaseg.storage.integrity import (
    HASH_KEY,
    META_KEY,
    IntegrityError,
    UnreadableFile,
    non_finite,
    read_header_meta,
    read_safetensors,
    write_safetensors,
)

FORMAT_VERSION = 1
# Ends an error line when the caller does not say how its file is re-created.
GENERIC_HINT = "re-create it with the adaseg command that wrote it"
MAX_LISTED = 5  # mismatches named in an error line; the rest are counted


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not fit the module it is loaded into."""


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about itself (the ``"adaseg"`` metadata entry)."""

    kind: str
    config: dict[str, Any]
    fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)
    content_hash: str | None = None  # None before writing, and in files that predate content hashes

    def to_json(self) -> dict[str, Any]:
        out = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "config": self.config,
            "fingerprint": self.fingerprint,
            "extra": self.extra,
        }
        if self.content_hash is not None:
            out[HASH_KEY] = self.content_hash
        return out


def tensor_fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 hex digest over (name, dtype, shape, bytes) of every tensor, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(name.encode("utf-8"))
        digest.update(str(t.dtype).encode("ascii"))
        digest.update(repr(tuple(t.shape)).encode("ascii"))
        # view as bytes: works for every dtype, including bfloat16 which numpy lacks
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def sidecar_path(path: str | os.PathLike) -> Path:
    """``NAME.safetensors`` -> ``NAME.json``."""
    return Path(path).with_suffix(".json")


def _unshare(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors sharing storage (tied weights); copy all but the first.
    seen: set[tuple[int, int]] = set()
    out = {}
    for name, t in state.items():
        t = t.detach()
        key = (t.untyped_storage().data_ptr(), t.device.index or 0) if t.numel() else (id(t), 0)
        if key in seen:
            t = t.clone()
        else:
            seen.add(key)
        out[name] = t
    return out


def save_checkpoint(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    *,
    kind: str,
    config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> CheckpointMeta:
    """Write ``tensors`` and their description to ``path`` (``.safetensors``) and its sidecar.

    ``config`` and ``extra`` must be JSON-serialisable and every floating-point tensor finite;
    both are checked before anything is written, so a bad value leaves no file behind. The
    file carries its content hash (:mod:`adaseg.storage.integrity`). Returns the recorded
    metadata.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"checkpoint path {path} must end in .safetensors")
    bad = [name for name, t in tensors.items() if not isinstance(t, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {path}: entries are not tensors: {bad[:MAX_LISTED]}")
    state = _unshare(tensors)
    broken = non_finite(state)
    if broken:
        raise CheckpointError(f"refusing to write checkpoint {path}: NaN/inf in {_listed(broken)}")
    meta = CheckpointMeta(
        kind=kind, config=dict(config), fingerprint=tensor_fingerprint(state), extra=dict(extra or {})
    )
    try:
        json.dumps(meta.to_json(), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: config/extra is not JSON-serialisable ({exc})") from None
    digest = write_safetensors(path, state, meta.to_json())
    meta = dataclasses.replace(meta, content_hash=digest)
    atomic_write_json(sidecar_path(path), meta.to_json())
    return meta


def _meta_from_json(path: Path, data: dict[str, Any] | None) -> CheckpointMeta:
    if data is None:
        raise CheckpointError(f"checkpoint {path} has no '{META_KEY}' metadata: not written by adaseg")
    if "kind" not in data or "fingerprint" not in data:
        what = "a derived dataset (from `adaseg derive`)" if "parent_fingerprint" in data and "metric" in data \
            else "another kind of adaseg file"
        raise CheckpointError(f"{path} is {what}, not a checkpoint")
    if data.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {data.get('format')!r}; "
                              f"this adaseg reads {FORMAT_VERSION}")
    if not isinstance(data.get("config"), dict) or not isinstance(data.get("extra", {}), dict):
        raise CheckpointError(f"checkpoint {path}: its metadata's config/extra are not JSON objects")
    return CheckpointMeta(kind=data["kind"], config=data["config"], fingerprint=data["fingerprint"],
                          extra=data.get("extra", {}), content_hash=data.get(HASH_KEY))


def read_checkpoint_meta(path: str | os.PathLike, *, hint: str | None = None) -> CheckpointMeta:
    """Read only the header of ``path`` (fast, no tensor data, nothing verified).

    ``hint`` ends an error line about an unreadable file: what to do about it (the caller
    knows which command re-creates the file; default :data:`GENERIC_HINT`)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = read_header_meta(path)
    except UnreadableFile as exc:
        raise CheckpointError(f"checkpoint {exc}; {hint or GENERIC_HINT}") from None
    except IntegrityError as exc:
        raise CheckpointError(f"checkpoint {exc}") from None
    return _meta_from_json(path, data)


def load_checkpoint(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", verify: bool = True, hint: str | None = None
) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Return ``(tensors, meta)`` after verifying the file; raise :class:`CheckpointError` with
    one line naming the file and how to re-create it when it is corrupt or holds NaN/inf.

    The content hash is checked on the bytes that are then parsed. A file written before
    content hashes (no ``content_sha256``) is verified by recomputing its tensor fingerprint
    instead, which covers the tensors but not the description. ``verify`` is kept for callers
    of the earlier API, where verification was optional; it can no longer be turned off.
    ``hint`` ends every error line: how to re-create the file (default :data:`GENERIC_HINT`;
    the run directory's files get theirs from :func:`adaseg.runs.run_dir.recreate_hint`).
    """
    if not verify:
        raise CheckpointError("load_checkpoint(verify=False) is gone: every load is verified")
    path = Path(path)
    hint = hint or GENERIC_HINT
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        read = read_safetensors(path, hint=hint)
    except IntegrityError as exc:
        raise CheckpointError(f"checkpoint {exc}") from None
    meta = _meta_from_json(path, read.meta)
    tensors = read.tensors
    if read.content_hash is None and tensor_fingerprint(tensors) != meta.fingerprint:
        raise CheckpointError(f"checkpoint {path} is corrupt: its tensors do not match the recorded fingerprint "
                              f"{meta.fingerprint[:12]}; {hint}")
    broken = non_finite(tensors)
    if broken:
        raise CheckpointError(f"checkpoint {path} holds NaN/inf values in {_listed(broken)}; {hint}")
    if str(device) != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta


def _listed(items: list[str]) -> str:
    more = len(items) - MAX_LISTED
    return ", ".join(items[:MAX_LISTED]) + (f" (+{more} more)" if more > 0 else "")


def check_state_dict(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], *, source: str
) -> None:
    """Raise :class:`CheckpointError` naming the first mismatched keys/shapes, if any.

    ``expected`` is the module's own ``state_dict()``; ``found`` the checkpoint's tensors.
    """
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {tuple(found[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in found and tuple(found[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if shapes:
        parts.append(f"shape mismatch (checkpoint vs model): {_listed(shapes)}")
    if missing:
        parts.append(f"missing from checkpoint: {_listed(missing)}")
    if unexpected:
        parts.append(f"not in the model: {_listed(unexpected)}")
    raise CheckpointError(f"{source} does not fit this model ({len(missing) + len(unexpected) + len(shapes)} "
                          f"mismatches): " + "; ".join(parts))


def load_into(module: nn.Module, path: str | os.PathLike, *, hint: str | None = None) -> CheckpointMeta:
    """Load the checkpoint at ``path`` into ``module`` (strict: every key and shape must match);
    ``hint`` as :func:`load_checkpoint`'s."""
    tensors, meta = load_checkpoint(path, hint=hint)
    check_state_dict(module.state_dict(), tensors, source=f"checkpoint {path}")
    module.load_state_dict(tensors, strict=True)
    return meta
