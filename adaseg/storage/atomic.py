"""Atomic writes: a reader sees the old file or the new one, never half of one.

Every artefact of a run (config, checkpoints, derived dataset, gates, reports) is written
through these helpers: the bytes go to a temporary file in the *same* directory (so the
final ``os.replace`` is a rename within one file system, which POSIX makes atomic), the
file is flushed and fsync'ed, then renamed over the destination. A crash or SIGKILL at any
point leaves either the previous version or the new one, plus at worst a stray
``.tmp-*`` file that the next write ignores.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

TMP_PREFIX = ".tmp-"


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The caller writes the file at the yielded path by any means (e.g. a library's
    ``save_file``). On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NaN is rejected: JSON has no NaN) atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def atomic_save_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None
) -> Path:
    """Save torch tensors with ``safetensors.torch.save_file`` atomically (no content hash: the
    files of a run go through :func:`adaseg.storage.integrity.write_safetensors` instead).

    Tensors are made contiguous (safetensors refuses views) and moved to CPU.
    ``metadata`` values must be strings (the format's rule).
    """
    from safetensors.torch import save_file

    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, str(tmp), metadata=dict(metadata) if metadata else None)
    return Path(path)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM wait (blocked, not lost) and are delivered when it
    ends: a few renames that must happen together are not cut in half by Ctrl-C or ``kill``.
    A no-op off the main thread and where signal masks do not exist."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, before_replace=None) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it becomes ``path``.

    If ``path`` already exists it is first renamed aside and removed after the new
    directory is in place, so at every moment ``path`` is either the complete old
    directory, absent for the instant between two renames, or the complete new one; it is
    never a half-written directory. On an exception (Ctrl-C and SIGTERM included) the
    temporary directory is removed and ``path`` is untouched. The swap and the removals run
    with SIGINT/SIGTERM deferred (:func:`signals_deferred`), so a signal cannot leave the old
    folder renamed aside or a ``.tmp-*`` folder behind. ``before_replace()``, when given, is
    called just before the swap (e.g. to check once more what is about to be replaced); if
    it raises, nothing is replaced. A ``path`` that is a file (or a link to one) is never
    replaced: :class:`FileExistsError` before anything is written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is a file, not a folder: it is not replaced")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent))
    try:
        yield tmp
        if before_replace is not None:
            before_replace()
    except BaseException:
        with signals_deferred():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    with signals_deferred():
        old = None
        try:
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + path.name + ".old.", dir=path.parent))
                os.rmdir(old)
                os.replace(path, old)
            os.replace(tmp, path)
        except BaseException:
            if old is not None and not path.exists():
                os.replace(old, path)  # put the old folder back
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
