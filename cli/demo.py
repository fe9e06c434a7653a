"""``adaseg demo``: the whole default recipe in one command, one run directory.

Runs, in order, and says so before each:

1. ``adaseg train-parent``  Step A (from the shipped base checkpoint when there is one)
2. ``adaseg derive``        Step B
3. ``adaseg fit-gate --beta 0.0005``  Step C
4. ``adaseg eval`` four times: full depth, the gate, pausing ``3:0.4,5:0.3``, gate + pausing

and ends with one comparison table. A step whose output is already in the run directory is
skipped (and says so), so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import click

from adaseg.cli.options import data_option, quiet_option, run_option
from adaseg.cli.recipe_options import threads_option
from adaseg.cli.run_guard import writing_run

DEMO_BETA = 0.0005
DEMO_PAUSE = "3:0.4,5:0.3"


@click.command(name="demo")
@data_option
@click.option("--iters", type=click.IntRange(min=1), default=None, help="train-parent iterations [its default].")
@click.option("--derive-limit", type=click.IntRange(min=1), default=None, help="derive --limit [all images].")
@click.option("--eval-limit", type=click.IntRange(min=1), default=None, help="eval --limit [all val images].")
@threads_option
@run_option
@quiet_option
@click.pass_context
def demo(ctx, data, iters, derive_limit, eval_limit, threads, run, quiet):
    """Run train-parent, derive, fit-gate and eval in order (the default recipe, end to end)."""
    import json

    from adaseg.cli.derive import derive
    from adaseg.cli.eval import eval_cmd
    from adaseg.cli.fit_gate import fit_gate
    from adaseg.cli.train_parent import train_parent
    from adaseg.cli.options import PauseSpec
    from adaseg.recipes.run_dir import RunDir

    run_dir = RunDir(run)

    def say(step: int, line: str) -> None:
        if not quiet:
            click.secho(f"[demo {step}/4] {line}", bold=True)

    # One lock for the whole demo: no other writer can slip in between its steps (the steps,
    # run in-process, take the same lock again: it is re-entrant).
    with writing_run(run_dir, command="demo", dirs=[run_dir.checkpoints_dir, run_dir.gates_dir, run_dir.reports_dir]):
        if run_dir.has("parent"):
            say(1, f"adaseg train-parent --run {run}: skipped, {run_dir.parent_path} exists")
        else:
            resume = run_dir.last_path.is_file()
            say(1, f"adaseg train-parent --run {run}" + (" --resume" if resume else ""))
            kwargs = {"data": data, "run": run, "threads": threads, "quiet": quiet, "resume": resume}
            if iters is not None:
                kwargs["iters"] = iters
            ctx.invoke(train_parent, **kwargs)
        if run_dir.has("derived") and _derived_current(run_dir):
            say(2, f"adaseg derive --run {run}: skipped, {run_dir.derived_path} exists")
        else:
            say(2, f"adaseg derive --run {run}")
            ctx.invoke(derive, run=run, threads=threads, quiet=quiet, limit=derive_limit)
        say(3, f"adaseg fit-gate --beta {DEMO_BETA} --run {run}")
        ctx.invoke(fit_gate, beta=DEMO_BETA, run=run, quiet=quiet)
        reports = []
        for gate, pause in (("none", None), ("latest", None), ("none", DEMO_PAUSE), ("latest", DEMO_PAUSE)):
            line = f"adaseg eval --gate {gate}" + (f" --pause {pause}" if pause else "") + f" --run {run}"
            say(4, line)
            plan = None if pause is None else PauseSpec().convert(pause, None, None)
            name = f"demo_{'gate' if gate == 'latest' else 'full'}{'_pause' if pause else ''}"
            if eval_limit is not None:  # a demo on a few images must not replace the full demo's report
                name += f"_limit{eval_limit}"
            ctx.invoke(eval_cmd, gate=gate, pause=plan, run=run, threads=threads, quiet=True, limit=eval_limit,
                       name=name)
            reports.append(json.loads(run_dir.report_path(name).read_text()))
    if not quiet:
        from rich.console import Console

        console = Console()
        if not console.is_terminal:  # keep the table's rows whole in logs
            console = Console(width=max(console.width, 150))
        console.print(comparison_table(reports))


def _derived_current(run_dir) -> bool:
    from adaseg.recipes.checkpoint import CheckpointError
    from adaseg.recipes.derived import DerivedDataset, DerivedDatasetError

    try:
        return DerivedDataset.load(run_dir.derived_path).parent_fingerprint == run_dir.parent_fingerprint()
    except (DerivedDatasetError, CheckpointError):  # an unreadable file is derived again
        return False


def comparison_table(reports: list[dict]):
    """One row per evaluation report: quality, GFLOPs (total / encoder), layers, images/s."""
    from rich.table import Table

    from adaseg.cli.eval import describe

    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}"

    first = reports[0]
    table = Table(title=f"adaseg demo: {first['info']['model']} on {first['info']['data']} val "
                        f"({first['settings']['images']} images)")
    for col in ("setting", "PQ", "mIoU", "AP", "GFLOPs total", "GFLOPs encoder", "enc. layers", "images/s"):
        table.add_column(col, justify="right" if col != "setting" else "left")
    for r in reports:
        m, g = r["metrics"], r["gflops"]["gflops"]
        table.add_row(
            describe(r["settings"]), pct(m.get("PQ")), pct(m.get("mIoU")), pct(m.get("AP")),
            f"{g['total']['mean']:.3f} ± {g['total']['std']:.3f}",
            f"{g['encoder']['mean']:.3f} ± {g['encoder']['std']:.3f}",
            f"{r['exits']['mean']:.2f}", f"{r['throughput']['images_per_s']:.1f}",
        )
    return table
