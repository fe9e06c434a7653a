"""``adaseg init-run --from CKPT --data SPEC --run R``: a run directory whose parent is a model
checkpoint (an imported Hugging Face model, a parent, the shipped base), so derive, fit-gate,
eval, sweep and predict work on it at once, with no training.

A separate command rather than ``train-parent --iters 0``: nothing is trained, so the run
records no recipe, optimiser or training state it never ran (``train-parent --resume`` has
nothing to resume), and its parent is the checkpoint's tensors unchanged (same fingerprint).
"""

from __future__ import annotations

import click

from adaseg.cli.options import quiet_option, run_option


@click.command(name="init-run")
@click.option("--from", "source", required=True, metavar="CHECKPOINT", type=click.Path(dir_okay=False),
              help="Model checkpoint to use as the run's parent (import-weights --hf output, a parent, a base).")
@click.option("--data", "data", required=True, metavar="NAME|PATH",
              help="The run's dataset (derive reads its train split, eval its val split); its classes must be the "
                   "checkpoint's.")
@run_option
@quiet_option
def init_run(source, data, run, quiet):
    """Make a run directory whose parent is CHECKPOINT (Steps B and C then run on it)."""
    from pathlib import Path

    from adaseg.cli.run_guard import writing_run
    from adaseg.data import DataError
    from adaseg.runs.from_checkpoint import init_run as make_run
    from adaseg.runs.run_dir import RunDir, RunDirError
    from adaseg.storage.checkpoint import CheckpointError

    if not Path(source).is_file():
        raise click.BadParameter(f"{source}: no such checkpoint file", param_hint="'--from'")
    run_dir = RunDir(run)
    with writing_run(run_dir, command="init-run", dirs=[run_dir.checkpoints_dir]):
        try:
            config = make_run(run_dir, source, data)
        except (CheckpointError, DataError, RunDirError) as exc:
            raise click.ClickException(str(exc)) from None
    if not quiet:
        click.echo(f"init-run: {run_dir.root} holds {source} as its parent ({config['model']}, data {data}); next: "
                   f"`adaseg eval --run {run_dir.root} --gate none`, `adaseg derive --run {run_dir.root}`, "
                   f"`adaseg fit-gate --run {run_dir.root} --beta 0.0005`")
