"""``adaseg derive``: Step B, per training image and exit, the parent's quality, plus the
gate's cached input. Reads config and parent from ``--run``; writes ``derived.safetensors``
(``--split val``: ``derived_val.safetensors``, the oracle gate's input, never used to fit)."""

from __future__ import annotations

import click

from adaseg.cli.options import device_option, json_option, quiet_option, run_data_option, run_option
from adaseg.cli.recipe_options import set_threads, threads_option
from adaseg.cli.run_guard import writing_run


@click.command(name="derive")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per forward pass.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the first N images of --split [default: all].")
@click.option("--split", type=click.Choice(["train", "val"]), default="train", show_default=True,
              help="train: Step B (derived.safetensors, what fit-gate reads). val: the val images into "
                   "derived_val.safetensors, only for `adaseg eval --gate oracle` (never used to fit).")
@run_data_option
@device_option
@threads_option
@run_option
@quiet_option
@json_option
def derive(batch_size, limit, split, data, device, threads, run, quiet, as_json):
    """Step B: score the parent at every exit on the training images (the derived dataset)."""
    import json

    from adaseg.data import DataError
    from adaseg.engine import derive as step_b
    from adaseg.storage.checkpoint import CheckpointError
    from adaseg.runs.derived import DerivedDatasetError
    from adaseg.utils.distributed import distributed_session
    from adaseg.utils.progress import JsonlLog, Reporter
    from adaseg.runs.run_dir import MissingStepError, RunDir, RunDirError

    set_threads(threads)
    run_dir = RunDir(run)
    try:
        run_dir.require("config", "parent")
        run_dir.read_config()
    except (MissingStepError, RunDirError) as exc:
        raise click.ClickException(str(exc)) from None
    with writing_run(run_dir, command="derive", dirs=[]), distributed_session(device) as dist_info:
        reporter = Reporter(quiet=quiet or as_json, log=JsonlLog(run_dir.log_path, command="derive"),
                            enabled=dist_info.is_main)
        reporter.event("start", run=str(run_dir.root), batch_size=batch_size, limit=limit, data=data, split=split)
        try:
            result = step_b.derive(run_dir, device=dist_info.device, batch_size=batch_size, limit=limit,
                                   data=data, split=split, reporter=reporter)
        except (CheckpointError, DerivedDatasetError, DataError, MissingStepError, RunDirError) as exc:
            raise click.ClickException(str(exc)) from None
        if result.derived is None:
            return
        summary = result.derived.summary()
        summary.update(path=result.path, seconds=result.seconds)
        reporter.event("done", **summary)
        if as_json:
            click.echo(json.dumps(summary, sort_keys=True))
            return
        _print(reporter, result, summary)


def _print(reporter, result, summary) -> None:
    from rich.table import Table

    from adaseg.eval.tasks.registry import QUALITY

    derived = result.derived
    metric = QUALITY[derived.metric].quality_label or QUALITY[derived.metric].primary
    images = "Training" if derived.info.get("split", "train") == "train" else "Val"
    table = Table(title=f"{images} images by best exit (ECO-M2F Fig. 2; ties go to the earliest exit)")
    table.add_column("best exit (layers)", justify="right")
    table.add_column("images", justify="right")
    table.add_column("share", justify="right")
    table.add_column("bar")
    for key, count, share in step_b_rows(derived):
        table.add_row(key, str(count), f"{100 * share:.1f}%", "#" * int(round(40 * share)))
    reporter.print(table)
    quality = Table(title=f"Mean per-image {metric} on the {derived.info.get('split', 'train')} images, by exit")
    for k in derived.exit_list:
        quality.add_column(f"exit {k}", justify="right")
    quality.add_row(*("-" if v is None else f"{100 * v:.2f}" for v in summary["mean_quality_per_exit"]))
    reporter.print(quality)
    reporter.info(f"derive: {derived.num_images} images x {len(derived.exit_list)} exits in {result.seconds:.0f} s "
                  f"({summary['undefined_all_exits']} undefined at every exit); wrote {result.path}")


def step_b_rows(derived):
    from adaseg.engine.derive import histogram_rows

    return histogram_rows(derived)
