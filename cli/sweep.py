"""``adaseg sweep``: a grid of operating points on the run's parent (fixed exits, gates, pause
plans and their combinations), each an ``adaseg eval`` report in ``reports/`` (reused when
already there), and the sweep's table, Pareto fronts, adaptive advantages, budget picks and
plots in ``sweeps/<name>/``."""

from __future__ import annotations

import click

from adaseg.cli.numbers import FiniteFloat, at_most_max_bootstrap, seed_type
from adaseg.cli.options import (PauseSpec, device_option, json_option, pause_output_option, quiet_option,
                                run_data_option, run_option)
from adaseg.cli.recipe_options import FloatList, IntList, set_threads, threads_option
from adaseg.cli.eval import MIN_BOOTSTRAP
from adaseg.cli.fit_gate import FEATURE_CHOICES
from adaseg.cli.run_guard import writing_run

# Exit status when the sweep is written but no measured point meets --target-gflops/--target-ips.
BUDGET_UNMET = 3


@click.command(name="sweep")
@click.option("--exits", default="all", show_default=True, metavar="K,...|all",
              help="Fixed exits: the static baseline curve (full depth is always included).")
@click.option("--betas", default="0,0.0005,0.002", show_default=True, metavar="B,...|none",
              help="Gates for these betas (a missing gate is fitted from the run's derived dataset); none: no gates.")
@click.option("--pause", "pauses", multiple=True, type=PauseSpec(), metavar="LAYER:RATIO,...",
              help="A pause plan, e.g. 3:0.4,5:0.3 (repeatable); also combined with every gate.")
@click.option("--pause-grid", is_flag=True, default=False,
              help="PAUMER's greedy search: one pause layer x --grid-ratios, then a second layer after the chosen one.")
@click.option("--grid-layers", type=IntList(), default=None, metavar="L,...",
              help="Layers the grid may pause after [default: 1..depth-1].")
@click.option("--grid-ratios", type=FloatList(), default="0.2,0.4,0.6,0.8", show_default=True, metavar="R,...",
              help="Pause ratios tried at each grid layer.")
@click.option("--grid-stages", type=click.IntRange(min=1), default=2, show_default=True,
              help="Most pause layers the grid search stacks.")
@click.option("--modes", default="entropy,random", show_default=True, metavar="entropy,random",
              help="Pause modes every pause plan is evaluated in.")
@pause_output_option
@click.option("--oracle", is_flag=True, default=False,
              help="Also the oracle gate at each of --betas (as `adaseg eval --gate oracle --beta B`: each val "
                   "image at its best exit under beta by derived_val.safetensors, from `adaseg derive --split "
                   "val`): a bound on any gate of this parent, plotted, never on the front, never a gate point.")
@click.option("--features", type=click.Choice(FEATURE_CHOICES), default="backbone", show_default=True,
              help="The gates' input, as `adaseg fit-gate --features`: backbone (the paper's) or exit2 (decided "
                   "after layer 2; gate files ..._exit2, fitted from Step B when missing).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N val images.")
@click.option("--flops-images", type=click.IntRange(min=1), default=None,
              help="Count FLOPs on the first N val images of each point [default: all evaluated].")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=0), default=1000, show_default=True,
              callback=at_most_max_bootstrap,
              help="Paired-bootstrap resamples over images for the intervals (0: none).")
@click.option("--level", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=0.9, show_default=True,
              help="Coverage of the bootstrap intervals.")
@click.option("--seed", type=seed_type(), default=0, show_default=True,
              help="Seeds the bootstrap and random pausing.")
@click.option("--target-gflops", type=FiniteFloat(min=0, min_open=True), default=None, metavar="G",
              help="Budget: encoder GFLOPs per image at most G; prints the best point meeting it.")
@click.option("--target-ips", type=FiniteFloat(min=0, min_open=True), default=None, metavar="X",
              help="Budget: at least X images/s; prints the best point meeting it.")
@click.option("--name", default="default", show_default=True, help="Sweep name: writes sweeps/NAME/.")
@run_data_option
@device_option
@threads_option
@run_option
@click.option("--parent", "parent", default=None, metavar="CHECKPOINT", type=click.Path(dir_okay=False),
              help="Sweep this model checkpoint (a parent, an imported model) instead of a run's parent; needs "
                   "--data and --out (no gates: --betas none is its default).")
@click.option("--out", "out", default=None, metavar="DIR", type=click.Path(file_okay=False),
              help="With --parent: where the reports and the sweep go (DIR/reports/, DIR/sweeps/NAME/).")
@quiet_option
@json_option
def sweep(exits, betas, pauses, pause_grid, grid_layers, grid_ratios, grid_stages, modes, pause_output, oracle, features,
          limit, flops_images, n_boot, level, seed, target_gflops, target_ips, name, data, device, threads, run, parent, out, quiet,
          as_json):
    """Operating points of one parent: Pareto front, adaptive advantage, budgets, plots."""
    import json

    from adaseg.data import DataError
    from adaseg.eval.bootstrap import BootstrapMemoryError
    from adaseg.eval.image_parts import PartsError
    from adaseg.storage.checkpoint import CheckpointError
    from adaseg.runs.derived import DerivedDatasetError
    from adaseg.utils.progress import Reporter
    from adaseg.runs.run_dir import MissingStepError, RunDir, RunDirError
    from adaseg.analysis import sweep as sw

    set_threads(threads)
    _refuse_idle_options(pauses, pause_grid)
    if n_boot != 0 and n_boot < MIN_BOOTSTRAP:
        raise click.BadParameter(f"{n_boot} resamples cannot give a {100 * level:g}% interval: use 0 (off) or at least "
                                 f"{MIN_BOOTSTRAP}", param_hint="'--bootstrap'")
    from adaseg.cli.checkpoint_target import open_target, refuse_untrained
    from adaseg.cli.options import given_on_command_line

    run_dir = open_target(run, parent, data, out, out_required=True)
    if parent is not None:
        if oracle:
            raise click.UsageError("--oracle reads a run's val Step B (`adaseg derive --split val`): use --run, "
                                   "not --parent")
        if given_on_command_line(click.get_current_context(), "betas") and _betas(betas):
            raise click.BadParameter(_no_gates(run_dir), param_hint="'--betas'")
        betas, data = "none", None  # a checkpoint has no gates; its "own" dataset is --data
    settings = sw.SweepSettings(exits=exits, betas=_betas(betas), pauses=tuple(str(p) for p in pauses),
                                pause_grid=pause_grid, grid_layers=grid_layers, grid_ratios=tuple(grid_ratios),
                                grid_stages=grid_stages, modes=_modes(modes), limit=limit, seed=seed, data=data,
                                flops_images=flops_images, pause_output=pause_output, oracle=oracle,
                                features=features)
    failures = (BootstrapMemoryError, CheckpointError, DataError, DerivedDatasetError, MissingStepError, PartsError,
                RunDirError)
    try:
        run_dir.require("config", "parent")
        parent = sw.read_parent(run_dir)
        sw.check_settings(settings, parent)  # first: a model that cannot pause says so, not "untrained"
        for mode in (settings.modes if pauses or pause_grid else ()):
            refuse_untrained(run_dir, pauses[0] if pauses else "grid", mode)
        out_dir = sw.check_name(run_dir, name)
        sw.require_derived_for(run_dir, sw.missing_gates(run_dir, settings.betas, parent.depth, settings.features),
                               settings.features)
        sw.check_combinations(run_dir, settings, parent)
        sw.check_image_counts(run_dir, settings)
        sw.check_oracle(run_dir, settings, device=device)
    except sw.SweepError as exc:
        raise _param_error(exc) from None
    except failures as exc:
        raise click.ClickException(str(exc)) from None

    dirs = [run_dir.reports_dir, run_dir.gates_dir, out_dir.parent]
    with writing_run(run_dir, command="sweep", dirs=dirs):
        reporter = Reporter.for_run(run_dir, command="sweep", quiet=quiet or as_json)
        reporter.event("start", run=str(run_dir.root), name=name, **settings.to_json(), bootstrap=n_boot, level=level,
                       target_gflops=target_gflops, target_ips=target_ips)
        try:
            data = _sweep(run_dir, settings, parent, device=device, n_boot=n_boot, level=level,
                          target_gflops=target_gflops, target_ips=target_ips, reporter=reporter)
        except sw.SweepError as exc:
            raise _param_error(exc) from None
        except failures as exc:
            raise click.ClickException(str(exc)) from None
        from adaseg.analysis.sweep_output import write_sweep

        from adaseg.runs.from_checkpoint import run_label

        title = f"{run_label(run_dir)}: {data['rows'][0]['images']} val images"  # the run's name, not its path
        files = write_sweep(out_dir, data, depth=parent.depth, title=title)
        budget = data["budget"]
        reporter.event("done", directory=str(out_dir), points=len(data["rows"]),
                       budget_met=None if budget is None else budget["best"] is not None)
        if as_json:
            click.echo(json.dumps(data, sort_keys=True))
        else:
            from adaseg.cli.sweep_tables import print_sweep

            print_sweep(reporter, data)
            reporter.info(f"sweep: {len(data['rows'])} points ({sum(r['reused'] for r in data['rows'])} reused); "
                          f"wrote {', '.join(str(f) for f in files[:2])} and {len(files) - 2} plots in {out_dir}")
        if budget is not None and budget["best"] is None:
            from adaseg.cli.sweep_tables import budget_unmet_line

            click.echo(f"Error: {budget_unmet_line(data)}", err=True)
            raise SystemExit(BUDGET_UNMET)


def _sweep(run_dir, settings, parent, *, device, n_boot, level, target_gflops, target_ips, reporter) -> dict:
    from adaseg.analysis.sweep import run_sweep
    from adaseg.analysis.sweep_analysis import analyse

    result = run_sweep(run_dir, settings, parent, device=device, reporter=reporter, need_parts=n_boot > 0)
    data = analyse(run_dir, result, n_boot=n_boot, seed=settings.seed, level=level, target_gflops=target_gflops,
                   target_ips=target_ips)
    data["settings"] = {**settings.to_json(), "bootstrap": n_boot, "target_gflops": target_gflops,
                        "target_ips": target_ips, "device": str(device), "depth": parent.depth,
                        "parent_fingerprint": parent.fingerprint}
    return data


def _no_gates(run_dir) -> str:
    """The line refusing gates on a checkpoint: it has no derived dataset to fit them from
    (the message says to make a run of it with init-run, then derive and fit-gate)."""
    from adaseg.runs.run_dir import MissingStepError

    try:
        run_dir.require("derived")
    except MissingStepError as exc:
        return str(exc)
    return f"{run_dir.parent_path} has no gates"


def _param_error(exc) -> click.ClickException:
    if exc.param is None:
        return click.ClickException(str(exc))
    return click.BadParameter(str(exc), param_hint=f"'--{exc.param}'")


def _betas(text: str) -> tuple[float, ...]:
    import math

    if text.strip().lower() in ("none", ""):
        return ()
    out = []
    for part in text.split(","):
        try:
            b = float(part)
        except ValueError:
            raise click.BadParameter(f"{part.strip()!r} is not a number (e.g. 0,0.0005,0.002 or none)",
                                     param_hint="'--betas'") from None
        if not (math.isfinite(b) and b >= 0):
            raise click.BadParameter(f"{part.strip()!r} must be a finite number >= 0", param_hint="'--betas'")
        if b not in out:
            out.append(b)
    return tuple(out)


def _modes(text: str) -> tuple[str, ...]:
    from adaseg.choices import PAUSE_MODES

    modes = []
    for part in text.split(","):
        m = part.strip()
        if m not in PAUSE_MODES:
            raise click.BadParameter(f"{m!r} is not one of {', '.join(PAUSE_MODES)}", param_hint="'--modes'")
        if m not in modes:
            modes.append(m)
    return tuple(modes)


def _refuse_idle_options(pauses, pause_grid: bool) -> None:
    """Options that cannot change anything without pausing are errors, not silently recorded."""
    from adaseg.cli.options import given_on_command_line

    ctx = click.get_current_context()
    if given_on_command_line(ctx, "modes") and not pauses and not pause_grid:
        raise click.UsageError("--modes chooses how tokens pause: it needs --pause SPEC or --pause-grid")
    if given_on_command_line(ctx, "pause_output") and not pauses and not pause_grid:
        raise click.UsageError("--pause-output chooses who labels paused tokens: it needs --pause SPEC or --pause-grid")
    for opt in ("grid_layers", "grid_ratios", "grid_stages"):
        if given_on_command_line(ctx, opt) and not pause_grid:
            raise click.UsageError(f"--{opt.replace('_', '-')} shapes the pause grid: it needs --pause-grid")
