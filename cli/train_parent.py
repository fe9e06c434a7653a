"""``adaseg train-parent``: Step A (weighted stochastic depth + random pausing).

Writes ``config.json``, ``checkpoints/last.safetensors`` (resumable state, every
``--ckpt-every`` iterations) and ``checkpoints/parent.safetensors`` into ``--run``.
See :mod:`adaseg.engine.train_parent` for the recipes and their defaults.
"""

from __future__ import annotations

import click

from adaseg.cli.numbers import FiniteFloat
from adaseg.cli.options import data_option, device_option, json_option, quiet_option, run_option, seed_option
from adaseg.cli.recipe_options import FloatList, IntList, Range01, set_threads, threads_option
from adaseg.cli.run_guard import writing_run
from adaseg.choices import RECIPES

# mirrors adaseg.models.mask2former.encoder_kinds.ENCODER_KINDS (torch-free here: the CLI imports
# this module before any command runs); the engine checks the value against the registry again
ENCODER_KINDS = ("deform", "lite", "rt")


@click.command(name="train-parent")
@click.option("--model", default="m2f_tiny", show_default=True, help="Registered model name (adaseg.models.registry).")
@data_option
@click.option("--init", "init", default="auto", show_default=True, metavar="CKPT|auto|none",
              help="Start from this adaseg checkpoint (parent or training state of the same model, an "
                   "imported HF Mask2Former (--model hf-mask2former) or DETR (--model hf-detr, or detr_r50 for a "
                   "ResNet-50 DETR), or a backbone from `import-weights --timm-backbone`); "
                   "auto: the base shipped in adaseg/assets for (model, data) if any, else random.")
@click.option("--init-encoder", "init_encoder", type=click.Choice(ENCODER_KINDS), default=None, metavar="KIND",
              help="The --init checkpoint is a Mask2Former whose encoder is KIND (deform|lite|rt), not the "
                   "model's: map it (deform <-> lite: layer i onto layer i; to or from rt: all but the encoder, "
                   "which stays fresh). Without it such a checkpoint is refused.")
@click.option("--recipe", type=click.Choice(RECIPES), default="wsd+pause", show_default=True,
              help="wsd: sum_k alpha_k L_k over exits; pause: PAUMER random pausing; standard: full depth only.")
@click.option("--exits", type=IntList(), default=None, help="Exits trained with wsd, e.g. 2..6 [default: the model's exits, 2..K for Mask2Former; 3,5 for m2f_rt_*].")
@click.option("--alphas", type=FloatList(), default=None,
              help="alpha_k per exit, increasing with k [default: k/K, e.g. 0.33,0.5,0.67,0.83,1 for K=6].")
@click.option("--pause-layers", type=IntList(), default=None,
              help="Layers a pause is drawn from each iteration [default: 2..K-1].")
@click.option("--pause-range", type=Range01(), default="0.2:0.8", show_default=True,
              help="tau ~ U[lo, hi] (PAUMER).")
@click.option("--aux-weight", type=float, default=0.1, show_default=True, help="Auxiliary-decoder loss weight.")
@click.option("--distill", type=FiniteFloat(min=0), default=0.0, show_default=True, metavar="LAMBDA",
              help="Self-distillation of every earlier exit toward the deepest exit's class and mask predictions "
                   "(Li et al. 2019), weight LAMBDA x alpha_k; 0 = off. wsd recipes, Mask2Former models.")
@click.option("--distill-temperature", type=FiniteFloat(min=0, min_open=True), default=1.0, show_default=True,
              help="Temperature of --distill's class term.")
@click.option("--iters", type=click.IntRange(min=1), default=500, show_default=True, help="Training iterations.")
@click.option("--epochs", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Train for this many passes over the training split instead of --iters: "
                   "iterations = ceil(epochs x images / batch size).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per iteration (over all ranks).")
@click.option("--lr", type=float, default=None,
              help="AdamW learning rate (poly decay 0.9) [default: 1e-4].")
@click.option("--weight-decay", type=FiniteFloat(min=0), default=None,
              help="AdamW weight decay [default: 0.05; DETR models 1e-4].")
@click.option("--backbone-lr-mult", type=FiniteFloat(min=0), default=None,
              help="Backbone learning rate = lr x this [default: 0.1].")
@click.option("--clip", type=float, default=None,
              help="Full-model gradient-norm clip [default: 0.01; DETR models 0.1].")
@click.option("--ckpt-every", type=click.IntRange(min=1), default=25, show_default=True,
              help="Write the resumable state every N iterations.")
@click.option("--amp", is_flag=True, default=False, help="bfloat16 autocast.")
@click.option("--resume", is_flag=True, default=False, help="Continue the run's interrupted training.")
@device_option
@seed_option
@threads_option
@run_option
@quiet_option
@json_option
@click.pass_context
def train_parent(ctx, model, data, init, init_encoder, recipe, exits, alphas, pause_layers, pause_range, aux_weight, distill,
                 distill_temperature, iters,
                 epochs, batch_size, lr, weight_decay, backbone_lr_mult, clip, ckpt_every, amp, resume, device, seed,
                 threads, run, quiet, as_json):
    """Step A: train the parent so that every encoder exit, and pausing, works."""
    import json

    from adaseg.data import DataError
    from adaseg.engine import train_parent as tp
    from adaseg.storage.checkpoint import CheckpointError
    from adaseg.utils.distributed import distributed_session
    from adaseg.utils.progress import JsonlLog, Reporter
    from adaseg.runs.run_dir import RunDir
    from adaseg.engine.train_setup import refuse_idle_options

    set_threads(threads)
    run_dir = RunDir(run)
    given = tp.TrainSettings(
        model=model, data=data, init=init, init_encoder=init_encoder, recipe=recipe, exits=exits, alphas=alphas, pause_layers=pause_layers,
        pause_range=pause_range, aux_weight=aux_weight, distill=distill, distill_temperature=distill_temperature,
        iters=iters, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, backbone_lr_mult=backbone_lr_mult, clip=clip, amp=amp, seed=seed,
        ckpt_every=ckpt_every,
    )
    if not resume:
        try:  # settings alone: refused before the run directory is touched
            tp.check_settings(given)
            refuse_idle_options(given, _given_names(ctx))
            tp.check_recipe_pauses(given)  # e.g. the default wsd+pause on m2f_rt_*: refused, naming why
        except tp.TrainSettingError as exc:
            raise click.BadParameter(str(exc), param_hint=f"'--{exc.param}'") from None
    # From here on the run directory is locked: the checks below see what no other writer can change.
    with writing_run(run_dir, command="train-parent", dirs=[run_dir.checkpoints_dir],
                     interrupt_hint=lambda: _interrupt_hint(run_dir)):
        settings = _settings(ctx, run_dir, given, resume=resume, epochs=epochs, quiet=quiet)
        with distributed_session(device) as dist_info:
            reporter = Reporter(quiet=quiet or as_json, log=JsonlLog(run_dir.log_path, command="train-parent"),
                                enabled=dist_info.is_main)
            reporter.event("start", run=str(run_dir.root), resume=resume, **settings.to_json())
            try:
                result = tp.train_parent(run_dir, settings, device=dist_info.device, resume=resume,
                                         reporter=reporter, rank=dist_info.rank, world_size=dist_info.world_size)
            except tp.TrainSettingError as exc:
                raise click.BadParameter(str(exc), param_hint=f"'--{exc.param}'") from None
            except (CheckpointError, DataError, ValueError, FloatingPointError) as exc:
                raise click.ClickException(str(exc)) from None
        summary = {"iterations": result.iterations, "resumed_from": result.resumed_from, "seconds": result.seconds,
                   "losses": result.last_losses, "parent": result.parent_path, "init": result.init,
                   "recipe": settings.recipe, "distill": settings.distill,
                   "distill_temperature": settings.distill_temperature}
        reporter.event("done", **summary)
        if as_json:
            if dist_info.is_main:
                click.echo(json.dumps(summary, sort_keys=True))
            return
        if result.iterations == result.resumed_from:  # a resumed run whose state already held every iteration
            reporter.info(f"train-parent: the training state already held all {result.iterations} iterations; "
                          f"wrote {result.parent_path} from it")
            return
        reporter.info(f"train-parent: {result.iterations - result.resumed_from} iterations in {result.seconds:.0f} s; "
                      f"final loss {result.last_losses.get('loss', float('nan')):.4f}; wrote {result.parent_path}")


def _settings(ctx, run_dir, given, *, resume: bool, epochs, quiet: bool):
    """The run's settings (:func:`adaseg.engine.train_setup.run_settings`), its errors as Click errors."""
    from adaseg.data import DataError
    from adaseg.engine import train_setup
    from adaseg.storage.checkpoint import CheckpointError
    from adaseg.engine.train_parent import TrainSettingError

    note = None if quiet else (lambda line: click.echo(line, err=True))
    try:
        return train_setup.run_settings(run_dir, given, _given_names(ctx), resume=resume, epochs=epochs, note=note)
    except TrainSettingError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'--{exc.param}'") from None
    except train_setup.TrainUsageError as exc:
        raise click.UsageError(str(exc)) from None
    except (train_setup.TrainRunError, CheckpointError, DataError) as exc:
        raise click.ClickException(str(exc)) from None


def _given_names(ctx) -> frozenset[str]:
    """Names of the options the user set (not left at their defaults)."""
    from adaseg.cli.options import given_on_command_line

    return frozenset(name for name in ctx.params if given_on_command_line(ctx, name))


def _interrupt_hint(run_dir) -> str:
    """What an interrupted train-parent left: the saved iteration to resume from, if any."""
    from adaseg.runs.run_dir import recreate_hint
    from adaseg.storage.checkpoint import CheckpointError, read_checkpoint_meta

    try:
        saved = read_checkpoint_meta(run_dir.last_path, hint=recreate_hint(run_dir.last_path)).extra.get("iteration")
    except CheckpointError:
        return f"no training state was saved yet: start again with `adaseg train-parent --run {run_dir.root}`"
    return (f"{run_dir.last_path} holds iteration {saved}: continue with "
            f"`adaseg train-parent --resume --run {run_dir.root}`")
