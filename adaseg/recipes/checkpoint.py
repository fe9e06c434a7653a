"""Checkpoints: a ``.safetensors`` file of tensors plus the JSON that says what they are.

Layout of one checkpoint ``NAME.safetensors``:

* the tensors (a model's ``state_dict``, or any named tensors), saved with safetensors;
* the file's metadata holds one entry, ``"adaseg"``: a JSON object with ``format`` (1),
  ``kind`` (e.g. ``"parent"``, ``"gate"``), ``config`` (the constructor settings needed to
  rebuild the module), ``fingerprint`` and any ``extra`` fields. Because it lives inside
  the one file, the tensors and their description are replaced together, atomically;
* ``NAME.json`` next to it: the same JSON, for people and tools that do not read
  safetensors headers. It is a copy; the safetensors metadata is the source of truth.

The **fingerprint** is a SHA-256 over the tensors' names, dtypes, shapes and bytes (in name
order), so two checkpoints with identical weights share it whatever their metadata. Later
steps record the fingerprint of the parent they were made from (the derived dataset, each
gate) and refuse to mix artefacts of different parents.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from adaseg.recipes.atomic import atomic_save_safetensors, atomic_write_json

FORMAT_VERSION = 1
META_KEY = "adaseg"
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

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "config": self.config,
            "fingerprint": self.fingerprint,
            "extra": self.extra,
        }


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

    ``config`` and ``extra`` must be JSON-serialisable; this is checked before anything is
    written, so a bad value leaves no file behind. Returns the recorded metadata.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"checkpoint path {path} must end in .safetensors")
    bad = [name for name, t in tensors.items() if not isinstance(t, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {path}: entries are not tensors: {bad[:MAX_LISTED]}")
    state = _unshare(tensors)
    meta = CheckpointMeta(
        kind=kind, config=dict(config), fingerprint=tensor_fingerprint(state), extra=dict(extra or {})
    )
    try:
        meta_text = json.dumps(meta.to_json(), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: config/extra is not JSON-serialisable ({exc})") from None
    atomic_save_safetensors(path, state, metadata={META_KEY: meta_text})
    atomic_write_json(sidecar_path(path), meta.to_json())
    return meta


def read_checkpoint_meta(path: str | os.PathLike) -> CheckpointMeta:
    """Read only the header of ``path`` (fast, no tensor data)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file ({exc})") from None
    if raw is None:
        raise CheckpointError(f"checkpoint {path} has no '{META_KEY}' metadata: not written by adaseg")
    data = json.loads(raw)
    if data.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {data.get('format')!r}; this adaseg reads {FORMAT_VERSION}")
    return CheckpointMeta(
        kind=data["kind"], config=data["config"], fingerprint=data["fingerprint"], extra=data.get("extra", {})
    )


def load_checkpoint(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", verify: bool = False
) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Return ``(tensors, meta)``; ``verify=True`` recomputes the fingerprint and compares."""
    from safetensors.torch import load_file

    meta = read_checkpoint_meta(path)
    tensors = load_file(str(path), device=str(device))
    if verify:
        actual = tensor_fingerprint(tensors)
        if actual != meta.fingerprint:
            raise CheckpointError(
                f"checkpoint {path}: tensors do not match the recorded fingerprint "
                f"({actual[:12]} != {meta.fingerprint[:12]}); the file was modified outside adaseg"
            )
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


def load_into(module: nn.Module, path: str | os.PathLike) -> CheckpointMeta:
    """Load the checkpoint at ``path`` into ``module`` (strict: every key and shape must match)."""
    tensors, meta = load_checkpoint(path)
    check_state_dict(module.state_dict(), tensors, source=f"checkpoint {path}")
    module.load_state_dict(tensors, strict=True)
    return meta
