"""The settings a Step A run starts with, from what the user gave.

A fresh run takes the given settings; ``--resume`` takes the interrupted run's stored ones
and lets the command line change only :data:`~adaseg.engine.train_parent.RESUMABLE_CHANGES`;
``--epochs`` becomes an iteration count; an option the recipe would never read is refused.
The CLI passes the names of the options the user gave and maps the errors: a
:class:`~adaseg.engine.train_parent.TrainSettingError` names one bad option,
:class:`TrainUsageError` is a conflict between options, :class:`TrainRunError` a run
directory that does not fit the request.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Collection

from adaseg.engine import train_parent as tp
from adaseg.runs.run_dir import RunDir
from adaseg.storage.checkpoint import CheckpointError

# Flag spellings of the settings whose field name differs from the option name.
_FLAGS = {"batch_size": "batch-size", "pause_layers": "pause-layers", "pause_range": "pause-range",
          "aux_weight": "aux-weight", "weight_decay": "weight-decay", "backbone_lr_mult": "backbone-lr-mult",
          "ckpt_every": "ckpt-every", "distill_temperature": "distill-temperature", "init_encoder": "init-encoder"}


class TrainUsageError(ValueError):
    """Options that contradict each other (or the interrupted run they resume)."""


class TrainRunError(ValueError):
    """The run directory does not fit the request (nothing to resume, or already trained)."""


def refuse_idle_options(settings: tp.TrainSettings, given: Collection[str]) -> None:
    """An option in ``given`` (setting names the user set) that the recipe never reads is an
    error, not silently recorded: --alphas needs a wsd recipe, the pause options a pause recipe.
    Raises :class:`~adaseg.engine.train_parent.TrainSettingError`."""
    if "alphas" in given and not settings.uses_wsd:
        raise tp.TrainSettingError("alphas", f"--alphas weigh the exits of wsd and wsd+pause; --recipe "
                                             f"{settings.recipe} trains full depth only and would ignore them")
    if "distill_temperature" in given and settings.distill == 0:
        raise tp.TrainSettingError("distill-temperature", "--distill-temperature is the temperature of --distill: "
                                                          "it needs --distill LAMBDA > 0")
    for name, flag in (("pause_layers", "pause-layers"), ("pause_range", "pause-range"), ("aux_weight", "aux-weight")):
        if name in given and not settings.uses_pause:
            raise tp.TrainSettingError(flag, f"--{flag} applies to the pause and wsd+pause recipes; --recipe "
                                             f"{settings.recipe} draws no pauses and would ignore it")


def merge_resume(stored: tp.TrainSettings, given: tp.TrainSettings, given_names: Collection[str]) -> tp.TrainSettings:
    """Stored settings win; a setting the user gave must agree with them, except the ones a
    resumed run may change (more iterations, checkpoint interval). Raises :class:`TrainUsageError`."""
    merged = dataclasses.replace(stored)
    for field in dataclasses.fields(stored):
        key = field.name
        if key not in given_names:
            continue
        new, old = getattr(given, key), getattr(stored, key)
        if key in tp.RESUMABLE_CHANGES:
            setattr(merged, key, new)
        elif new != old:
            raise TrainUsageError(
                f"--{_FLAGS.get(key, key)} {new} differs from the interrupted run's {old}: --resume continues "
                "that run as it was set up (only --iters and --ckpt-every may change)"
            )
    return merged


def iters_from_epochs(settings: tp.TrainSettings, epochs: float, given_names: Collection[str], *,
                      note: Callable[[str], None] | None = None) -> tp.TrainSettings:
    """``--epochs E``: the settings with ``iters = ceil(E x training images / batch size)``;
    ``note`` receives the one line that says so. Raises :class:`TrainUsageError` when --iters
    was given too, :class:`~adaseg.data.DataError` when the training split cannot be read."""
    from adaseg.data import build_dataset

    if "iters" in given_names:
        raise TrainUsageError("give --iters or --epochs, not both")
    images = len(build_dataset(settings.data, "train", train=True))
    iters = max(1, math.ceil(epochs * images / settings.batch_size))
    if iters > tp.MAX_ITERS:
        raise tp.TrainSettingError("epochs", f"--epochs {epochs:g} = {iters} iterations ({images} training images, "
                                             f"batch {settings.batch_size}): at most {tp.MAX_ITERS}")
    if note is not None:
        note(f"train-parent: --epochs {epochs:g} = {iters} iterations ({images} training images, "
             f"batch {settings.batch_size})")
    return dataclasses.replace(settings, iters=iters)


def run_settings(run_dir: RunDir, given: tp.TrainSettings, given_names: Collection[str], *, resume: bool,
                 epochs: float | None, note: Callable[[str], None] | None = None) -> tp.TrainSettings:
    """The run's settings: the stored ones on ``resume`` (merged with what may change), else
    ``given``; with ``epochs`` turned into iterations; checked, with --init's fit.

    Call with the run directory locked. Raises :class:`TrainRunError`, :class:`TrainUsageError`,
    :class:`~adaseg.engine.train_parent.TrainSettingError`,
    :class:`~adaseg.storage.checkpoint.CheckpointError` or :class:`~adaseg.data.DataError`.
    """
    if resume:
        if not run_dir.last_path.is_file():
            raise TrainRunError(
                f"{run_dir.root} has no training state to resume: run `adaseg train-parent --run {run_dir.root}` first"
            )
        settings = merge_resume(tp.stored_settings(run_dir), given, given_names)
    else:
        if run_dir.last_path.is_file() or run_dir.parent_path.is_file():
            raise TrainRunError(
                f"{run_dir.root} already holds a trained parent or training state: pass --resume to continue it, "
                "or choose another --run"
            )
        settings = given
    if epochs is not None:
        settings = iters_from_epochs(settings, epochs, given_names, note=note)
    tp.check_settings(settings)
    refuse_idle_options(settings, given_names)
    if resume:
        tp.check_resume_iters(run_dir, settings, tp.resumed_iteration(run_dir))
    init_path = None if resume else tp.resolve_init(settings)
    if init_path is not None and settings.init_encoder is None:  # --init-encoder: checked when mapped
        try:
            tp.check_init(init_path, settings.model)
        except CheckpointError as exc:  # another encoder kind: its first mismatched keys, --init-encoder
            from adaseg.engine.init_encoder import other_encoder_refusal

            raise other_encoder_refusal(init_path, settings.model, exc) from None
    return settings
