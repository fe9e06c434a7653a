"""``--parent CHECKPOINT`` for the commands that read a run's parent (eval, sweep): the run
directory or the checkpoint they work on, and the refusals every such command shares.

With ``--parent`` the checkpoint's dataset is ``--data`` (required) and the command writes only
into ``--out DIR`` (``reports/``, ``sweeps/``, ``log.jsonl``, ``.lock``): never next to the
checkpoint, never into a folder the user did not name (:class:`adaseg.runs.from_checkpoint.CheckpointRun`).
"""

from __future__ import annotations

from pathlib import Path

import click


def open_target(run: str, parent: str | None, data: str | None, out: str | None, *, out_required: bool = False):
    """The :class:`~adaseg.runs.run_dir.RunDir` of ``--run``, or the checkpoint of ``--parent``
    seen as one. Usage errors (exit 2, nothing written): ``--out`` without ``--parent``,
    ``--parent`` with ``--run`` or without ``--data``, a missing checkpoint file, and (sweep)
    ``--parent`` without ``--out``."""
    from adaseg.cli.options import given_on_command_line
    from adaseg.runs.from_checkpoint import CheckpointRun
    from adaseg.runs.run_dir import RunDir

    ctx = click.get_current_context()
    if parent is None:
        if out is not None:
            raise click.UsageError("--out goes with --parent CHECKPOINT (a run writes into its own directory)")
        return RunDir(run)
    if given_on_command_line(ctx, "run"):
        raise click.UsageError("--parent and --run are exclusive: evaluate a checkpoint, or a run's parent")
    if data is None:
        raise click.UsageError(f"--parent {parent} needs --data SPEC: the dataset to score the checkpoint on")
    if out_required and out is None:
        raise click.UsageError(f"--parent {parent} needs --out DIR: where its reports and files go (a checkpoint "
                               "has no run directory)")
    if not Path(parent).is_file():
        raise click.BadParameter(f"{parent}: no such checkpoint file", param_hint="'--parent'")
    if out is not None and (RunDir(out).config_path.exists() or RunDir(out).parent_path.exists()):
        # its reports are of its own parent: a checkpoint's would replace them under the same names
        raise click.BadParameter(f"{out} is a run directory: evaluate its parent with --run {out}, or give --out "
                                 "a folder of its own", param_hint="'--out'")
    return CheckpointRun(parent, data=data, out=out)


def refuse_untrained(run_dir, pause, pause_mode: str) -> None:
    """Entropy pausing on a parent whose auxiliary decoders are untrained: one ``--pause`` line
    saying what to run (reads the checkpoint's header only, before anything is written)."""
    from adaseg.runs.from_checkpoint import UntrainedError, check_pause

    try:
        check_pause(run_dir.parent_path, pause, pause_mode)
    except UntrainedError as exc:
        raise click.BadParameter(str(exc), param_hint="'--pause'") from None
