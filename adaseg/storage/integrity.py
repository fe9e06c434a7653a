"""Content hashes: every ``.safetensors`` file adaseg writes can be verified when read.

A safetensors file is three parts: 8 bytes (little-endian header length ``n``), ``n`` bytes of
JSON header (each tensor's dtype, shape and byte offsets, plus ``"__metadata__"``), then the
raw tensor bytes (the *data section*). adaseg keeps its description of the file (kind, config,
fingerprints of what it was made from, ...) as one JSON string in ``__metadata__["adaseg"]``.

The **content hash** (``content_sha256`` inside that JSON) is SHA-256 over

1. the tensor layout: the header without ``__metadata__``, as canonical JSON (so a changed
   dtype, shape or offset is caught, not only changed bytes);
2. adaseg's description without the hash itself, as canonical JSON;
3. the data section, hashed as one byte range (no per-tensor work, ~1 GB/s).

It is computed from the bytes about to be written and checked against the bytes read, and
the tensors handed to the caller are views of those very bytes (no second read, no copy), so
what was verified is what is used. Any change to the file -- one flipped bit in the data, an edited config -- is a
mismatch, reported as one line naming the file and how to re-create it.

Files written before content hashes existed have none; :func:`read_safetensors` returns them
with ``content_hash`` None and the caller decides (checkpoints are then verified by their
tensor fingerprint; see :mod:`adaseg.storage.checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from adaseg.storage.atomic import atomic_path

META_KEY = "adaseg"
HASH_KEY = "content_sha256"
_DOMAIN = b"adaseg-content-v1\n"  # versions the definition above
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header
_warned: set[str] = set()
# safetensors dtype names (those adaseg writes: torch's floating, integer and bool types)
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}
_ITEMSIZE = {dtype: torch.empty(0, dtype=dtype).element_size() for dtype in _DTYPES.values()}


class IntegrityError(ValueError):
    """A file's bytes do not match its content hash, or it is not a readable safetensors file."""


class UnreadableFile(IntegrityError):
    """Not a readable safetensors file; ``detail`` says why (the message names the file)."""

    def __init__(self, path, detail: str, hint: str = ""):
        super().__init__(f"{path} is not a readable safetensors file ({detail})" + (f"; {hint}" if hint else ""))
        self.path, self.detail = path, detail


@dataclass
class ReadFile:
    """A safetensors file read whole: ``meta`` is adaseg's description (None if the file has
    none), ``tensors`` its tensors on CPU, ``content_hash`` the verified hash (None: the file
    predates content hashes and was not verified here)."""

    meta: dict[str, Any] | None
    tensors: dict[str, torch.Tensor]
    content_hash: str | None


def canonical(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces, no NaN): equal objects, equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def content_hash(layout: Mapping[str, Any], meta: Mapping[str, Any], data: memoryview | bytes) -> str:
    """SHA-256 hex digest over (layout, meta without its hash, data section); see module docstring."""
    described = {k: v for k, v in meta.items() if k != HASH_KEY}
    digest = hashlib.sha256(_DOMAIN)
    digest.update(canonical(dict(layout)) + b"\n")
    digest.update(canonical(described) + b"\n")
    digest.update(data)
    return digest.hexdigest()


def split_safetensors(buf: bytes | memoryview, *, path: str | os.PathLike) -> tuple[dict[str, Any], memoryview]:
    """``(header dict, data section)`` of safetensors bytes; :class:`IntegrityError` if malformed."""
    view = memoryview(buf)
    if len(view) < 8:
        raise UnreadableFile(path, f"{len(view)} bytes")
    n = int.from_bytes(view[:8], "little")
    if n > min(len(view) - 8, _MAX_HEADER):
        raise UnreadableFile(path, f"header length {n} exceeds the file")
    try:
        header = json.loads(bytes(view[8 : 8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableFile(path, f"header: {exc}") from None
    if not isinstance(header, dict):
        raise UnreadableFile(path, "its header is not a JSON object")
    return header, view[8 + n :]


def _layout(header: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in header.items() if k != "__metadata__"}


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> str:
    """Write ``tensors`` with ``meta`` (+ its content hash) to ``path`` atomically; return the hash.

    ``meta`` must be JSON-serialisable without NaN. The data section is produced once by
    safetensors; only the header is re-emitted with the hash added (padded to 8 bytes, as
    safetensors aligns it), so the tensors' bytes are written exactly once.
    """
    from safetensors.torch import save

    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    raw = save(cpu)
    header, data = split_safetensors(raw, path=path)
    digest = content_hash(_layout(header), meta, data)
    full = {**meta, HASH_KEY: digest}
    header = {**_layout(header), "__metadata__": {META_KEY: json.dumps(full, sort_keys=True, allow_nan=False)}}
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(len(head).to_bytes(8, "little"))
            f.write(head)
            f.write(data)
    return digest


def read_safetensors(path: str | os.PathLike, *, hint: str) -> ReadFile:
    """Read ``path`` whole, verify its content hash (if it has one), parse its tensors.

    ``hint`` ends every error line: what the user should do (e.g. which command re-creates
    the file). Raises :class:`IntegrityError` with one line naming the file.
    """
    path = Path(path)
    if path.is_dir():
        raise IntegrityError(f"{path} is a directory, not a safetensors file")
    try:
        buf = _read_all(path)
    except FileNotFoundError:
        raise IntegrityError(f"{path} does not exist") from None
    except OSError as exc:
        raise IntegrityError(f"{path} cannot be read ({exc.strerror or exc})") from None
    header, data = split_safetensors(buf, path=f"{path}")
    meta = read_meta_from_header(header, path=path)
    digest = None
    if meta is not None and HASH_KEY in meta:
        digest = content_hash(_layout(header), meta, data)
        if digest != meta[HASH_KEY]:
            raise IntegrityError(
                f"{path} is corrupt: its bytes do not match its content hash ({digest[:12]} != "
                f"{str(meta[HASH_KEY])[:12]}); {hint}"
            )
    return ReadFile(meta=meta, tensors=tensors_from_buffer(_layout(header), data, path=path, hint=hint),
                    content_hash=digest)


def _read_all(path: Path) -> bytearray:
    # a bytearray (writable) lets the tensors be views of the very bytes that were hashed
    with open(path, "rb") as f:
        buf = bytearray(os.fstat(f.fileno()).st_size)
        if f.readinto(buf) != len(buf):
            raise OSError(f"{path} changed size while being read")
    return buf


def tensors_from_buffer(
    layout: Mapping[str, Any], data: memoryview, *, path: str | os.PathLike, hint: str = ""
) -> dict[str, torch.Tensor]:
    """The tensors a safetensors ``layout`` describes, as views of the data section ``data``
    (no copy), in name order; :class:`UnreadableFile` if an entry does not fit the data."""
    tensors = {}
    for name in sorted(layout):
        info = layout[name]
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise UnreadableFile(path, f"tensor {name!r} has an unknown dtype or a malformed entry", hint) from None
        numel = math.prod(shape)
        if not 0 <= start <= end <= len(data) or end - start != numel * _ITEMSIZE[dtype] or min(shape, default=0) < 0:
            raise UnreadableFile(path, f"tensor {name!r} does not fit the data section", hint)
        if numel == 0:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            tensors[name] = torch.frombuffer(data, dtype=dtype, count=numel, offset=start).reshape(shape)
    return tensors


def read_meta_from_header(header: Mapping[str, Any], *, path: str | os.PathLike) -> dict[str, Any] | None:
    """adaseg's description in a parsed header, or None when the file has none."""
    raw = (header.get("__metadata__") or {}).get(META_KEY)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except (TypeError, json.JSONDecodeError):
        raise IntegrityError(f"{path}: its '{META_KEY}' metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise IntegrityError(f"{path}: its '{META_KEY}' metadata is not a JSON object")
    return meta


def read_header_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """adaseg's description from the header only (fast, nothing verified; None if absent)."""
    path = Path(path)
    if path.is_dir():
        raise IntegrityError(f"{path} is a directory, not a safetensors file")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            first = f.read(8)
            n = int.from_bytes(first, "little") if len(first) == 8 else -1
            if n < 0 or n > min(size - 8, _MAX_HEADER):
                raise UnreadableFile(path, f"{size} bytes" if n < 0 else f"header length {n} exceeds the file")
            head = first + f.read(n)
    except FileNotFoundError:
        raise IntegrityError(f"{path} does not exist") from None
    except OSError as exc:
        raise IntegrityError(f"{path} cannot be read ({exc.strerror or exc})") from None
    header, _ = split_safetensors(head, path=path)
    return read_meta_from_header(header, path=path)


def _finite(t: torch.Tensor) -> bool:
    # A finite sum proves every element finite (NaN and inf propagate); one reduction, no (N,)
    # bool tensor. Only a non-finite sum, which may also be an overflow of large finite values,
    # needs the exact element-wise check.
    if t.numel() == 0 or bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def non_finite(tensors: Mapping[str, torch.Tensor], names: Iterable[str] | None = None) -> list[str]:
    """Names of floating-point tensors (among ``names``, default all) holding NaN or inf."""
    keys = tensors.keys() if names is None else names
    return [k for k in keys if tensors[k].is_floating_point() and not _finite(tensors[k])]


def warn_once(key: str, message: str) -> None:
    """Print ``adaseg: note: MESSAGE`` on stderr once per process for ``key``."""
    if key in _warned:
        return
    _warned.add(key)
    print(f"adaseg: note: {message}", file=sys.stderr)


# ---------------------------------------------------------------------- JSON files
# A JSON file adaseg writes (config.json, eval reports) carries its own content hash under
# HASH_KEY: SHA-256 over a domain tag and the canonical JSON of the object without that key.
# Canonical JSON is independent of indentation and key order, so the file's layout may
# change, but any changed value (an edited PQ, a parts record pointed at another file) is a
# mismatch.
_JSON_DOMAIN = b"adaseg-json-v1\n"


def json_content_hash(obj: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of a JSON object without its own ``content_sha256`` key."""
    digest = hashlib.sha256(_JSON_DOMAIN)
    digest.update(canonical({k: v for k, v in obj.items() if k != HASH_KEY}))
    return digest.hexdigest()


def seal_json(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as it will read back from JSON, with its content hash under ``content_sha256``.

    The object is round-tripped through JSON first (tuples become lists, numpy-free floats
    stay bit-equal), so the hash is the one a reader computes from the file."""
    plain = json.loads(json.dumps({k: v for k, v in obj.items() if k != HASH_KEY}, allow_nan=False))
    return {**plain, HASH_KEY: json_content_hash(plain)}


def check_json(obj: Mapping[str, Any], *, path: str | os.PathLike, hint: str) -> bool:
    """Verify a JSON object read from ``path`` against its recorded content hash.

    Returns True when it matches, False when the object records no hash (a file written
    before JSON content hashes; the caller decides whether that is acceptable). Raises
    :class:`IntegrityError` (one line naming the file, ending with ``hint``) when it does not
    match: the file was edited or damaged after adaseg wrote it."""
    recorded = obj.get(HASH_KEY)
    if recorded is None:
        return False
    digest = json_content_hash(obj)
    if not isinstance(recorded, str) or digest != recorded:
        raise IntegrityError(f"{path} was edited or damaged after adaseg wrote it: its content does not match its "
                             f"content hash ({digest[:12]} != {str(recorded)[:12]}); {hint}")
    return True
