"""The run-directory lock: at most one command writes a run directory at a time.

Every command that writes ``--run DIR`` (train-parent, derive, fit-gate, eval, demo) holds an
exclusive ``fcntl.flock`` on ``DIR/.lock`` from before its first write to its exit. While
held, the file records the holder (one JSON object: pid, host, command line, start time), so
a second writer is refused with one line naming the holder's pid and command instead of
silently overwriting its results. Under ``torchrun`` only rank 0, the one rank that writes,
takes it.

Why flock: the kernel releases it when the holder's process dies, however it dies (SIGKILL,
OOM killer), so a lock is never left held by a dead process. A clean release removes the
file; a file found with a holder recorded but no lock held therefore means that holder died:
:meth:`RunLock.acquire` returns it so the command can report it (its outputs are complete
files, thanks to atomic writes, but it did not finish).

The lock is re-entrant within one process (``adaseg demo`` runs the other commands
in-process) and advisory: it excludes adaseg processes, not other programs.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK_NAME = ".lock"

# resolved lock path -> [file descriptor, nesting depth] of the locks this process holds
_held: dict[str, list[int]] = {}


class RunLockedError(RuntimeError):
    """Another process holds the run directory's lock; the message names it."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock, as recorded in the lock file."""

    pid: int | None
    host: str | None
    command: str
    since: str

    def alive(self) -> bool | None:
        """Whether the pid still runs (None: unknown, e.g. recorded on another host)."""
        if self.pid is None or self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True

    def describe(self) -> str:
        where = "" if self.host in (None, socket.gethostname()) else f" on {self.host}"
        return f"`{self.command}` (pid {self.pid}{where}, since {self.since})"


def _parse(text: str) -> Holder | None:
    text = text.strip()
    if not text:
        return None
    try:
        data: Any = json.loads(text)
        return Holder(pid=int(data["pid"]), host=data.get("host"), command=str(data.get("command", "?")),
                      since=str(data.get("since", "?")))
    except (ValueError, KeyError, TypeError):
        return Holder(pid=None, host=None, command=f"unreadable record {text[:60]!r}", since="?")


def _read(fd: int) -> Holder | None:
    return _parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))


def command_line() -> str:
    """This process's command line as the user typed it (``adaseg eval --run r``)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("adaseg", "main.py", "__main__.py"):
        argv[0] = "adaseg"
    return shlex.join(argv)


class RunLock:
    """The lock of run directory ``root`` (see the module docstring).

    Args:
        root: the run directory; created if missing when the lock is taken.
        command: the holder's description recorded in the file (default: this command line).
        path: the lock file (default ``root/.lock``); another folder's lock lies beside it
            (:func:`folder_lock`), since a folder replaced by a rename would take its lock along.
        option: the option the user changes to avoid the lock, named in messages.
    """

    def __init__(self, root: str | os.PathLike, *, command: str | None = None, path: str | os.PathLike | None = None,
                 option: str = "--run"):
        self.root = Path(root)
        self.path = self.root / LOCK_NAME if path is None else Path(path)
        self.command = command or command_line()
        self.option = option
        self._key: str | None = None

    def acquire(self) -> Holder | None:
        """Take the lock or raise :class:`RunLockedError`; returns the holder recorded by a
        previous process that died while holding it (None when the lock was free and clean)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        if key in _held:
            _held[key][1] += 1
            self._key = key
            return None
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                what = "is a directory, not adaseg's lock file" if self.path.is_dir() else "cannot be opened"
                raise RunLockedError(f"{self.path} {what} ({exc.strerror or exc}): remove it when no adaseg "
                                     f"command runs on this directory, or use another {self.option}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read(fd)
                # The holder writes its record just after taking the lock: a loser of a close
                # race can read the file still empty. Wait briefly so the message names it.
                for _ in range(25):
                    if holder is not None:
                        break
                    time.sleep(0.02)
                    holder = _read(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunLockedError(f"cannot lock {self.path}: {exc.strerror}") from None
                raise RunLockedError(self._busy_message(holder)) from None
            # A holder releasing the lock unlinks the file before closing it: if we locked that
            # unlinked file, the lock protects nothing; open the current file again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = _read(fd)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                             "since": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, (record + "\n").encode("utf-8"), 0)
        _held[key] = [fd, 1]
        self._key = key
        return stale

    def _busy_message(self, holder: Holder | None) -> str:
        if holder is None:
            return (f"{self.root} is in use by another adaseg process (lock {self.path}): wait for it, "
                    f"or use another {self.option}")
        alive = holder.alive()
        if alive is False:
            return (f"{self.root} is locked by {holder.describe()}, which is no longer running but left a child "
                    f"process holding {self.path}: end that process, or use another {self.option}")
        return f"{self.root} is in use by {holder.describe()}: wait for it to finish, or use another {self.option}"

    def release(self) -> None:
        """Give the lock up (the outermost release in this process removes the file)."""
        key, self._key = self._key, None
        if key is None or key not in _held:
            return
        entry = _held[key]
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _held[key]
        try:
            os.unlink(self.path)  # while still holding it: see acquire()
        except FileNotFoundError:
            pass
        os.close(entry[0])

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holds_lock(root: str | os.PathLike) -> bool:
    """Whether this process holds ``root``'s lock."""
    return str((Path(root) / LOCK_NAME).resolve()) in _held


def folder_lock(folder: str | os.PathLike, *, option: str) -> RunLock:
    """The lock of an output folder that is replaced as a whole (``adaseg predict --out``):
    the hidden file ``.NAME.lock`` beside it, so the lock outlives the folder's swap; removed
    on release like a run's."""
    folder = Path(folder)
    return RunLock(folder, path=folder.parent / f".{folder.name}.lock", option=option)
