"""``adaseg demo``: the whole default recipe in one command, one run directory.

The sequence (train-parent, derive, fit-gate, four evals; steps already done are skipped)
is :mod:`adaseg.engine.demo`'s; this command runs each step's command in-process, says so
before each, and ends with one comparison table.
"""

from __future__ import annotations

import click

from adaseg.cli.options import data_option, quiet_option, run_option
from adaseg.cli.recipe_options import threads_option
from adaseg.cli.run_guard import writing_run


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
    from adaseg.engine.demo import DemoError, demo_steps
    from adaseg.runs.run_dir import RunDir

    commands = {"train-parent": train_parent, "derive": derive, "fit-gate": fit_gate, "eval": eval_cmd}
    run_dir = RunDir(run)
    reports = []
    # One lock for the whole demo: no other writer can slip in between its steps (the steps,
    # run in-process, take the same lock again: it is re-entrant).
    with writing_run(run_dir, command="demo", dirs=[run_dir.checkpoints_dir, run_dir.gates_dir, run_dir.reports_dir]):
        steps = demo_steps(run_dir, run=run, data=data, iters=iters, derive_limit=derive_limit,
                           eval_limit=eval_limit, threads=threads, quiet=quiet)
        while True:
            try:
                step = next(steps)
            except StopIteration:
                break
            except DemoError as exc:  # e.g. a corrupt derived dataset: named, never silently redone
                raise click.ClickException(str(exc)) from None
            if not quiet:
                click.secho(f"[demo {step.number}/4] {step.line}", bold=True)
            if step.skipped:
                continue
            ctx.invoke(commands[step.command], **step.options)
            if step.report is not None:
                reports.append(json.loads(run_dir.report_path(step.report).read_text()))
    if not quiet:
        from rich.console import Console

        console = Console()
        if not console.is_terminal:  # keep the table's rows whole in logs
            console = Console(width=max(console.width, 150))
        console.print(comparison_table(reports))


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
