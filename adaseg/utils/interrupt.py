"""SIGTERM handled like Ctrl-C: the command unwinds (temporary files removed, nothing
half-written), says it was interrupted and records it in the run's log.

Python turns SIGINT into :class:`KeyboardInterrupt` but by default dies silently on SIGTERM
(what ``kill``, batch schedulers and ``torchrun`` send). :func:`sigterm_raises` makes SIGTERM
raise :class:`Terminated` in the main thread instead, so ``finally`` blocks and atomic writes
clean up exactly as for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

# shell convention: 128 + signal number
EXIT_CODES = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (a BaseException, like
    KeyboardInterrupt, so ``except Exception`` does not swallow it)."""


def signal_name(exc: BaseException) -> str | None:
    """``"SIGINT"`` / ``"SIGTERM"`` for an interruption, else None."""
    if isinstance(exc, KeyboardInterrupt):
        return "SIGINT"
    if isinstance(exc, Terminated):
        return "SIGTERM"
    return None


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
