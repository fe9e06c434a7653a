"""Check, before any work starts, that a command can write every place it will write.

An evaluation that runs for an hour and then fails to write its report has lost the hour; so
each writing command names its output places up front and :func:`check_writable` refuses
with one line naming the first one that cannot be written: a directory where a file belongs
(or the reverse), no write permission, a read-only file system. A place that does not exist
yet must be creatable: its nearest existing ancestor must be a writable directory.

Nothing is created or written by the check (``os.access`` with the effective ids, which is
also right for root, who may write regardless of permission bits).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable


class NotWritableError(OSError):
    """An output place cannot be written; the message names it."""


def _can_write(path: Path, *, directory: bool) -> bool:
    mode = os.W_OK | (os.X_OK if directory else 0)
    try:
        return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)
    except OSError:
        return False


def _check_missing(path: Path) -> None:
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotWritableError(f"cannot create {path}: {ancestor} is a file, not a directory")
    if not _can_write(ancestor, directory=True):
        raise NotWritableError(f"cannot create {path}: {ancestor} is not writable")


def check_writable(*, dirs: Iterable[str | os.PathLike] = (), files: Iterable[str | os.PathLike] = ()) -> None:
    """Raise :class:`NotWritableError` (one line) unless every place can be written.

    Args:
        dirs: directories files will be created in (atomically: a temporary file, then a
            rename, so the directory itself must be writable).
        files: files that will be appended to in place (e.g. ``log.jsonl``).
    """
    for d in map(Path, dirs):
        if not d.exists():
            _check_missing(d)
        elif not d.is_dir():
            raise NotWritableError(f"cannot write into {d}: it is a file, not a directory")
        elif not _can_write(d, directory=True):
            raise NotWritableError(f"cannot write into {d}: permission denied or read-only")
    for f in map(Path, files):
        if not f.exists():
            _check_missing(f)
        elif f.is_dir():
            raise NotWritableError(f"cannot write {f}: it is a directory, not a file")
        elif not _can_write(f, directory=False):
            raise NotWritableError(f"cannot write {f}: permission denied or read-only")
