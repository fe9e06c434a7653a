"""``adaseg predict``: the run's parent on the user's images (files, folders, or a ``--data``
split), written to ``--out`` as COCO-panoptic PNGs + ``predictions.json``, semantic label PNGs,
colour overlays (a detection model: its boxes, ``detections.json``), pictures of where the
compute went, and a contact sheet."""

from __future__ import annotations

import contextlib

import click

from adaseg.cli.numbers import FiniteFloat, seed_type
from adaseg.cli.options import DEFAULT_RUN, PauseSpec, device_option, pause_output_option, quiet_option
from adaseg.cli.recipe_options import set_threads, threads_option
from adaseg.choices import PAUSE_MODES, SPLITS, TASKS

NOTHING_PREDICTED = 2  # exit code when no image could be predicted


class NothingPredicted(click.ClickException):
    exit_code = NOTHING_PREDICTED


@click.command(name="predict")
@click.argument("inputs", nargs=-1, type=click.Path(), metavar="[INPUT]...")
@click.option("--run", "run", default=DEFAULT_RUN, show_default=True, metavar="DIR|CHECKPOINT",
              type=click.Path(dir_okay=True, file_okay=True),
              help="Run directory, or a model checkpoint file (a parent, an imported model: its recorded categories, "
                   "else --data's).")
@click.option("--parent", "parent", default=None, metavar="CHECKPOINT", type=click.Path(dir_okay=False),
              help="A model checkpoint to predict with (as --run CHECKPOINT; exclusive with --run).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=True, file_okay=False), metavar="DIR",
              help="Output folder (refused if it holds files, unless --overwrite).")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace an earlier `adaseg predict` output in --out.")
@click.option("--data", "data", default=None, metavar="NAME|PATH",
              help="Dataset with the run's categories: without INPUT, predict its --split; with INPUT, use its "
                   "categories and eval transform [default: the run's dataset; required with a checkpoint].")
@click.option("--split", type=click.Choice(SPLITS), default=None, help="Split of --data [default: val].")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N images.")
@click.option("--gate", "gate", default="auto", show_default=True, metavar="FILE|latest|auto|none",
              help="Gate picking each image's exit; auto: the run's latest gate when it has one and no --exit.")
@click.option("--exit", "exit_", type=click.IntRange(min=1), default=None, help="Fixed exit layer (no gate).")
@click.option("--pause", "pause", default=None, type=PauseSpec(), metavar="LAYER:RATIO,...",
              help="Pause tokens after encoder layers, e.g. 3:0.4,5:0.3.")
@click.option("--pause-mode", type=click.Choice(PAUSE_MODES), default="entropy", show_default=True,
              help="Which tokens pause: lowest auxiliary entropy (PAUMER) or random ones.")
@pause_output_option
@click.option("--seed", default=0, show_default=True, type=seed_type(), help="Seed of random pausing.")
@click.option("--task", type=click.Choice(TASKS), default=None,
              help="What to predict [default: the model's task].")
@click.option("--score-threshold", "score_threshold", type=FiniteFloat(min=0, max=1), default=None,
              help="Detection models: the boxes drawn on the pictures score at least this [default: 0.5]; "
                   "detections.json holds every box.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images per forward pass (a batch pads its images to one size; 1 keeps images independent).")
@click.option("--sheet", type=click.IntRange(min=0), default=8, show_default=True,
              help="Images on the contact sheet (0: no sheet).")
@device_option
@threads_option
@quiet_option
def predict(inputs, run, parent, out, overwrite, data, split, limit, gate, exit_, pause, pause_mode, pause_output, seed,
            task, score_threshold, batch_size, sheet, device, threads, quiet):
    """Predict images and draw where the compute went.

    \b
    INPUT: image files, or folders (searched recursively for .jpg .png .bmp .tif .webp ...).
    Unreadable files are named and skipped; exit code 2 when no image was predicted.
    """
    set_threads(threads)
    run = _parent_as_run(run, parent)
    _refuse_idle_options(inputs, data, split, pause, pause_mode, run)
    _check_out(out, overwrite)
    with _holding_out(out):
        _check_out(out, overwrite)  # again, now that no other predict can write it
        _predict(inputs, run, out, data, split, limit, gate, exit_, pause, pause_mode, pause_output, seed, task,
                 batch_size, sheet, device, quiet, overwrite, score_threshold)


def _parent_as_run(run: str, parent: str | None) -> str:
    """``--parent CHECKPOINT`` is ``--run CHECKPOINT`` (as eval and sweep spell it); both at once are refused."""
    from pathlib import Path

    from adaseg.cli.options import given_on_command_line

    if parent is None:
        return run
    if given_on_command_line(click.get_current_context(), "run"):
        raise click.UsageError("--parent and --run are exclusive: predict with a checkpoint, or with a run")
    if not Path(parent).is_file():
        raise click.BadParameter(f"{parent}: no such checkpoint file", param_hint="'--parent'")
    return parent


def _predict(inputs, run, out, data, split, limit, gate, exit_, pause, pause_mode, pause_output, seed, task,
             batch_size, sheet, device, quiet, overwrite, score_threshold=None):
    from adaseg.predict.images import ImageError, find_images
    from adaseg.predict.predictor import PredictError, Predictor

    try:
        predictor = Predictor(run, data=data, gate=gate, exit=exit_, pause=pause, pause_mode=pause_mode, seed=seed,
                              pause_output=pause_output, task=task, device=device, batch_size=batch_size,
                              score_threshold=score_threshold)
        if not inputs:
            dataset = predictor.dataset(split or "val")
            jobs = list(range(len(dataset) if limit is None else min(limit, len(dataset))))
        else:
            dataset = None
            dropped: list = []
            jobs = find_images(list(inputs), exclude=[out], dropped=dropped)  # never earlier outputs
            if dropped and not quiet:
                click.echo(f"note: {len(dropped)} file{'s' * (len(dropped) != 1)} under INPUT left out: --out and "
                           "earlier `adaseg predict` outputs are never inputs", err=True)
            jobs = jobs if limit is None else jobs[:limit]
    except PredictError as exc:
        if exc.param is not None:
            raise click.BadParameter(str(exc), param_hint=f"'--{exc.param}'") from None
        raise click.ClickException(str(exc)) from None
    except ImageError as exc:
        raise click.BadParameter(str(exc), param_hint="INPUT") from None
    if not jobs:
        raise NothingPredicted(f"no images in {' '.join(inputs)} (looked for {', '.join(_extensions())})")
    settings = {"run": str(run), "gate": None if predictor.gate_path is None else str(predictor.gate_path),
                "exit": exit_, "pause": None if pause is None else str(pause), "pause_mode": pause_mode,
                "pause_output": pause_output, "seed": seed, "task": predictor.task, "batch_size": batch_size, "data": data,
                "split": None if inputs else (split or "val"), "inputs": list(inputs), "device": str(device)}
    if predictor.task == "detection":
        settings["score_threshold"] = predictor.score_threshold
    predicted, skipped = _run(predictor, dataset, jobs, out, settings, sheet=sheet, quiet=quiet, overwrite=overwrite)
    if not quiet:
        click.echo(f"predict: {predicted} image{'s' * (predicted != 1)} predicted, {len(skipped)} skipped; wrote {out}",
                   err=True)


def _run(predictor, dataset, jobs, out: str, settings: dict, *, sheet: int, quiet: bool, overwrite: bool = False):
    from adaseg.predict.images import ImageError
    from adaseg.predict.writer import PredictionWriter
    from adaseg.storage.atomic import atomic_dir

    adaptive = settings["gate"] is not None or settings["exit"] is not None or settings["pause"] is not None
    skipped: list[dict] = []
    count = 0
    # the whole folder appears at the end: an interrupted run leaves --out as it was
    with atomic_dir(out, before_replace=lambda: _check_out(out, overwrite)) as tmp:
        writer = PredictionWriter(tmp, meta=predictor.meta, task=predictor.task, compute=adaptive, sheet=sheet)
        step = predictor.batch_size
        for start in range(0, len(jobs), step):
            part = jobs[start:start + step]
            if dataset is not None:
                preds = _predict_split(predictor, dataset, part, skipped)
            else:
                loaded = []
                for job in part:
                    try:
                        loaded.append(predictor.load(job.path, name=job.name))
                    except ImageError as exc:
                        click.echo(f"skipped {exc}", err=True)
                        skipped.append({"file": str(job.path), "reason": str(exc)})
                preds = predictor.predict_loaded(loaded) if loaded else []
            for p in preds:
                if p.note and not quiet:
                    click.echo(f"note: {p.source}: {p.note}", err=True)
                writer.write(p)
                count += 1
        if count == 0:
            raise NothingPredicted(f"no image predicted: all {len(skipped)} inputs were skipped")
        writer.finish(settings, skipped, title=_title(settings))
    return count, skipped


def _predict_split(predictor, dataset, part: list[int], skipped: list[dict]) -> list:
    """Predict dataset images ``part``; an image whose files do not read (DataError) is named
    and skipped like an unreadable input, the others of its batch still predicted."""
    from adaseg.data import DataError

    try:
        return predictor.predict_dataset(dataset, part)
    except DataError as exc:
        if len(part) > 1:
            return [p for i in part for p in _predict_split(predictor, dataset, [i], skipped)]
        click.echo(f"skipped {exc}", err=True)
        skipped.append({"file": dataset.records[part[0]].image_path, "reason": str(exc)})
        return []


def _title(settings: dict) -> str:
    what = []
    if settings["gate"]:
        from pathlib import Path

        what.append(f"gate {Path(settings['gate']).stem}")
    elif settings["exit"]:
        what.append(f"exit {settings['exit']}")
    else:
        what.append("full depth")
    if settings["pause"]:
        what.append(f"pause {settings['pause']} ({settings['pause_mode']})")
    return f"adaseg predict: {settings['run']} | " + ", ".join(what)


def _extensions() -> list[str]:
    from adaseg.predict.images import IMAGE_EXTENSIONS

    return list(IMAGE_EXTENSIONS)


def _check_out(out: str, overwrite: bool) -> None:
    """--out must be a folder adaseg may write: see adaseg.predict.writer.check_out (a link is
    refused, --overwrite replaces only an unchanged earlier output of adaseg predict)."""
    from adaseg.predict.writer import OutFolderError, check_out

    try:
        check_out(out, overwrite)
    except OutFolderError as exc:
        raise click.BadParameter(str(exc), param_hint="'--out'") from None


@contextlib.contextmanager
def _holding_out(out: str):
    """Hold --out's lock (a second predict into it is refused with one line) and turn SIGTERM
    into a clean unwind like Ctrl-C: the half-written folder is removed, an earlier output
    stays as it was, one line says so, exit 128 + the signal number."""
    from pathlib import Path

    from adaseg.runs.lock import RunLockedError, folder_lock
    from adaseg.utils.interrupt import EXIT_CODES, Terminated, sigterm_raises, signal_name

    parent = Path(out).parent
    made_parent = not parent.exists()
    lock = folder_lock(out, option="--out")
    try:
        lock.acquire()
    except RunLockedError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        with sigterm_raises():
            yield
    except (KeyboardInterrupt, Terminated) as exc:
        name = signal_name(exc)
        click.echo(f"adaseg predict: interrupted by {name}; --out {out} is as it was before (nothing half-written)",
                   err=True)
        raise SystemExit(EXIT_CODES[name]) from None
    finally:
        lock.release()
        if made_parent and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()  # a refused or interrupted predict leaves no empty folder behind


def _refuse_idle_options(inputs, data, split, pause, pause_mode: str, run: str = DEFAULT_RUN) -> None:
    from adaseg.cli.options import given_on_command_line

    ctx = click.get_current_context()
    from pathlib import Path

    # without INPUT a run directory predicts its own dataset's --split; a checkpoint has none
    own_split = Path(run).is_dir()
    if not inputs and data is None and not own_split:
        raise click.UsageError(f"nothing to predict: give INPUT files/folders or --data SPEC ({run} is not a run "
                               "directory with a dataset of its own)")
    if split is not None and (inputs or (data is None and not own_split)):
        raise click.UsageError("--split picks the split of --data (or of the run's own dataset) to predict: it needs "
                               "--data and no INPUT, or a run directory and no INPUT")
    if given_on_command_line(ctx, "pause_mode") and pause is None:
        raise click.UsageError("--pause-mode chooses which tokens pause: it needs --pause (e.g. --pause 3:0.4,5:0.3)")
    if given_on_command_line(ctx, "seed") and (pause is None or pause_mode != "random"):
        raise click.UsageError("--seed seeds random pausing only: it needs --pause ... --pause-mode random")
