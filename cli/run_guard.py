"""What every command that writes a run directory does around its work.

``with writing_run(run_dir, command="eval", dirs=[run_dir.reports_dir]):`` ...

1. checks that every output place (the given directories and ``log.jsonl``) can be written,
   before any work starts (:mod:`adaseg.runs.writable`);
2. takes the run directory's lock (:mod:`adaseg.runs.lock`), reporting a previous
   holder that died while holding it;
3. turns SIGTERM into a clean unwind (:mod:`adaseg.utils.interrupt`); an interruption
   (Ctrl-C or SIGTERM) prints one line, is recorded in ``log.jsonl`` as an ``interrupted``
   event (``"ok": false``), and exits with 128 + the signal number;
4. records a failure (a :class:`click.ClickException`) of a command that had logged its
   start as a ``failed`` event (a refusal before any work leaves the log as it was);
5. releases the lock however the block ends (and removes the run directory again if this
   command created it and wrote nothing into it).

Under ``torchrun`` only rank 0 writes, so only rank 0 checks and locks (read from ``RANK``,
before the process group exists: a refused rank 0 exits and torchrun stops the others).
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Callable, Iterable, Iterator

import click


def is_writing_rank() -> bool:
    """True unless this is a torchrun worker other than rank 0."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


@contextlib.contextmanager
def writing_run(
    run_dir,
    *,
    command: str,
    dirs: Iterable[os.PathLike] = (),
    interrupt_hint: Callable[[], str] | None = None,
) -> Iterator[None]:
    """See the module docstring. ``run_dir``: :class:`~adaseg.runs.run_dir.RunDir`;
    ``dirs``: the directories the command writes files into (the run directory's log is added);
    ``interrupt_hint``: called after an interruption for what the user can do next."""
    from adaseg.utils.interrupt import EXIT_CODES, Terminated, sigterm_raises, signal_name
    from adaseg.utils.progress import JsonlLog
    from adaseg.runs.lock import RunLock, RunLockedError
    from adaseg.runs.writable import NotWritableError, check_writable

    main = is_writing_rank()
    created = not run_dir.root.exists()  # a refused command then leaves no empty run directory
    log = JsonlLog(run_dir.log_path, command=command, enabled=main)
    lock = RunLock(run_dir.root)
    if main:
        try:
            check_writable(dirs=[run_dir.root, *dirs], files=[run_dir.log_path])
            stale = lock.acquire()
        except (NotWritableError, RunLockedError) as exc:
            raise click.ClickException(str(exc)) from None
        if stale is not None:
            died = {False: "it is no longer running: killed or crashed", None: "killed or crashed",
                    True: "killed or crashed; its pid now belongs to another process"}[stale.alive()]
            note = (f"a previous {stale.describe()} ended without releasing the lock of {run_dir.root} ({died}): "
                    "the files it finished are complete, but it did not finish")
            click.echo(f"adaseg {command}: note: {note}", err=True)
            log.write("stale_lock", previous_pid=stale.pid, previous_command=stale.command, since=stale.since)
    started_at = _log_size(run_dir)
    try:
        with sigterm_raises():
            yield
    except (KeyboardInterrupt, Terminated) as exc:
        name = signal_name(exc)
        log.write("interrupted", signal=name, ok=False)
        hint = interrupt_hint() if interrupt_hint is not None else (
            "every file it wrote before is complete (atomic writes); nothing is half-written")
        click.echo(f"adaseg {command}: interrupted by {name}; {hint}", err=True)
        raise SystemExit(EXIT_CODES[name]) from None
    except click.ClickException as exc:
        if _log_size(run_dir) != started_at:  # the command had logged its start: close its record
            with contextlib.suppress(OSError):  # a log that cannot be written must not hide the error
                log.write("failed", error=exc.format_message(), ok=False)
        raise
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        # Disk full (or quota, read-only, I/O error) mid-run, the log's write included: one
        # line naming the file; the files finished before are complete (atomic writes).
        where = f"{exc.filename}: " if exc.filename else ""
        message = (f"{where}{exc.strerror or os.strerror(exc.errno)} while `adaseg {command}` was writing; every file "
                   "it finished before is complete and nothing is half-written (atomic writes): free space and run "
                   "it again")
        with contextlib.suppress(OSError):
            log.write("failed", error=message, ok=False)
        raise click.ClickException(message) from None
    finally:
        if main:
            lock.release()
            if created:
                with contextlib.suppress(OSError):
                    run_dir.root.rmdir()  # only succeeds when nothing was written


# errno values that mean the disk, not the command, failed a write
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG}


def _log_size(run_dir) -> int | None:
    try:
        return run_dir.log_path.stat().st_size
    except OSError:
        return None

