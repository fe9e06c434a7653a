"""What a command shows and records while it runs.

* On a terminal: a rich progress bar (done/total, speed, ETA, the latest metrics such as
  the loss), plus rich tables for results.
* Off a terminal (CI logs, ``| tee``, batch jobs): no bar and no control characters; one
  plain line every ``every_s`` seconds and one at the end, e.g.
  ``train: 30/100 (30%) 2.31 it/s eta 0:00:30 loss=0.1234``.
* ``--quiet``: nothing on the console except errors.
* Always (on rank 0): the run directory's JSONL log gets one object per event
  (``{"time": ..., "command": ..., "event": ..., ...}``), so a run can be followed with
  ``tail -f`` or parsed later whatever the console showed.

Only rank 0 of a distributed run writes (``enabled=False`` elsewhere).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

LOG_WIDTH = 160


def _jsonable(value: Any) -> Any:
    # JSON has no NaN/inf; a log line must never fail to serialise.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # 0-d tensors / numpy scalars
        return _jsonable(value.item())
    return str(value)


class JsonlLog:
    """Append-only JSON-lines log.

    Each event is one ``write`` of one line to a file opened with ``O_APPEND``, so
    concurrent writers (e.g. two commands on one run) interleave whole lines.

    Args:
        path: the log file (its directory is created), or None for no log.
        command: recorded in every event (e.g. ``"fit-gate"``).
        enabled: False on non-zero ranks: nothing is written.
    """

    def __init__(self, path: str | os.PathLike | None, *, command: str, enabled: bool = True):
        self.path = Path(path) if path is not None else None
        self.command = command
        self.enabled = enabled and path is not None

    def write(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
            "command": self.command,
            "event": event,
            **{k: _jsonable(v) for k, v in fields.items()},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, sort_keys=False) + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:  # name the log (os.write's error names no file): one line upstream
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno or 0), str(self.path)) from None


def _format_metrics(metrics: dict[str, Any]) -> str:
    parts = []
    for k, v in metrics.items():
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(parts)


def _format_eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    return str(_dt.timedelta(seconds=int(round(seconds))))


class Reporter:
    """A command's console and log.

    Args:
        quiet: print nothing but errors.
        log: the JSONL log (or None).
        console: where to print (default: stdout); its ``is_terminal`` picks bar vs lines.
        enabled: False on non-zero ranks (prints and logs nothing).
        every_s: seconds between plain progress lines off a terminal.
        clock: time source (tests pass a fake one).
    """

    def __init__(
        self,
        *,
        quiet: bool = False,
        log: JsonlLog | None = None,
        console: Console | None = None,
        enabled: bool = True,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.quiet = quiet or not enabled
        self.log = log if (log is not None and enabled) else None
        if console is None:
            console = Console()
            if not console.is_terminal:
                # Off a terminal nothing reads the width: keep lines and tables whole in logs.
                console = Console(width=max(console.width, LOG_WIDTH))
        self.console = console
        self.every_s = every_s
        self.clock = clock

    @classmethod
    def for_run(cls, run_dir, *, command: str, quiet: bool = False, enabled: bool = True) -> "Reporter":
        """The usual reporter of a command: console + ``run_dir``'s ``log.jsonl``.

        ``run_dir`` is a :class:`adaseg.runs.run_dir.RunDir`; ``enabled`` False on non-zero ranks.
        """
        return cls(quiet=quiet, log=JsonlLog(run_dir.log_path, command=command, enabled=enabled), enabled=enabled)

    @property
    def interactive(self) -> bool:
        return not self.quiet and self.console.is_terminal

    def event(self, event: str, **fields: Any) -> None:
        """Log only (no console)."""
        if self.log is not None:
            self.log.write(event, **fields)

    def info(self, message: str, **fields: Any) -> None:
        """A line on the console (unless quiet) and an ``info`` event in the log."""
        if not self.quiet:
            self.console.print(message, highlight=False, markup=False)
        self.event("info", message=message, **fields)

    def print(self, renderable: Any) -> None:
        """A rich renderable (e.g. a table) on the console unless quiet; not logged."""
        if not self.quiet:
            self.console.print(renderable)

    def progress(self, *, total: int, description: str, unit: str = "it") -> "ProgressTask":
        return ProgressTask(self, total=total, description=description, unit=unit)


def progress_or_none(reporter: Reporter | None, *, total: int, description: str,
                     unit: str = "it") -> contextlib.AbstractContextManager:
    """``reporter.progress(...)`` as a context manager, or one that yields None when there is
    no reporter: ``with progress_or_none(reporter, ...) as p:`` and ``if p is not None: p.update()``."""
    if reporter:
        return reporter.progress(total=total, description=description, unit=unit)
    return contextlib.nullcontext()


class ProgressTask:
    """Context manager for one loop: ``with reporter.progress(total=n, description="fit") as p:
    p.update(loss=...)``. See the module docstring for what each mode shows."""

    def __init__(self, reporter: Reporter, *, total: int, description: str, unit: str):
        self.reporter = reporter
        self.total = max(int(total), 0)
        self.description = description
        self.unit = unit
        self.completed = 0
        self.metrics: dict[str, Any] = {}
        self._progress: Progress | None = None
        self._task = None
        self._start = 0.0
        self._last_line = 0.0

    def __enter__(self) -> "ProgressTask":
        self._start = self._last_line = self.reporter.clock()
        if self.reporter.interactive:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[speed_text]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=self.reporter.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, metrics="", speed_text="")
        self.reporter.event("progress_start", task=self.description, total=self.total)
        return self

    # -- numbers shared by every mode --------------------------------------------------
    @property
    def elapsed(self) -> float:
        return self.reporter.clock() - self._start

    @property
    def speed(self) -> float:
        """Units per second since the start (0 before any time has passed)."""
        elapsed = self.elapsed
        return self.completed / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float:
        """Seconds left at the current speed (inf when unknown)."""
        speed = self.speed
        return (self.total - self.completed) / speed if speed > 0 else math.inf

    def line(self) -> str:
        """The plain one-line status used off a terminal."""
        pct = 100.0 * self.completed / self.total if self.total else 100.0
        text = (
            f"{self.description}: {self.completed}/{self.total} ({pct:.0f}%) "
            f"{self.speed:.2f} {self.unit}/s eta {_format_eta(self.eta)}"
        )
        metrics = _format_metrics(self.metrics)
        return text + (" " + metrics if metrics else "")

    def update(self, advance: int = 1, **metrics: Any) -> None:
        """Advance by ``advance`` units and record the latest metrics (e.g. ``loss=0.3``)."""
        self.completed += advance
        self.metrics.update(metrics)
        if self._progress is not None:
            self._progress.update(
                self._task,
                advance=advance,
                metrics=_format_metrics(self.metrics),
                speed_text=f"{self.speed:.2f} {self.unit}/s",
            )
            if self.reporter.clock() - self._last_line >= self.reporter.every_s:
                self._last_line = self.reporter.clock()
                self._log_status()
        elif self.reporter.clock() - self._last_line >= self.reporter.every_s:
            self._last_line = self.reporter.clock()
            if not self.reporter.quiet:
                self.reporter.console.print(self.line(), highlight=False, markup=False, soft_wrap=True)
            self._log_status()

    def _log_status(self) -> None:
        self.reporter.event(
            "progress", task=self.description, completed=self.completed, total=self.total,
            speed=self.speed, eta_s=self.eta, **self.metrics,
        )

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._progress is not None:
            self._progress.stop()
        elif not self.reporter.quiet and exc_type is None:
            self.reporter.console.print(self.line(), highlight=False, markup=False, soft_wrap=True)
        self.reporter.event(
            "progress_end", task=self.description, completed=self.completed, total=self.total,
            seconds=self.elapsed, ok=exc_type is None, **self.metrics,
        )
