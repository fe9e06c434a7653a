"""``adaseg compare REPORT... [--vs REPORT]``: each report minus the baseline on PQ / mIoU / AP and
encoder GFLOPs, with a paired-bootstrap interval and one-sided p-values, from the reports'
per-image parts. Reads only; ``--json`` prints the comparison."""

from __future__ import annotations

import click

from adaseg.cli.numbers import FiniteFloat, at_most_max_bootstrap, seed_type

MIN_BOOTSTRAP = 100


@click.command(name="compare")
@click.argument("reports", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--vs", "vs", type=click.Path(dir_okay=False), default=None, metavar="REPORT",
              help="Baseline report [default: the first REPORT].")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=MIN_BOOTSTRAP), default=1000, show_default=True,
              callback=at_most_max_bootstrap,
              metavar="N", help="Bootstrap resamples of the images.")
@click.option("--seed", type=seed_type(), default=0, show_default=True, help="Seed of the resamples.")
@click.option("--level", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=0.9, show_default=True,
              help="Coverage of the intervals.")
@click.option("--metrics", default=None, metavar="A,B,...",
              help="Figures to compare [default: PQ,mIoU,AP, or mIoU for semantic models]; encoder GFLOPs always.")
@click.option("--across-parents", is_flag=True,
              help="Pair reports of different parents scored on the same images (e.g. two training recipes); "
                   "without it only settings of one parent are compared.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare(reports, vs, n_boot, seed, level, metrics, across_parents, as_json):
    """Compare eval reports on the same images with a paired bootstrap."""
    import json

    from rich.console import Console

    from adaseg.analysis.compare import CompareError, compare as run_compare

    try:
        result = run_compare(reports, vs=vs, n_boot=n_boot, seed=seed, level=level, metrics=metrics,
                             across_parents=across_parents)
    except CompareError as exc:
        if exc.param:
            raise click.BadParameter(str(exc), param_hint=f"'--{exc.param}'") from None
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_json(), sort_keys=True))
        return
    from adaseg.utils.progress import LOG_WIDTH

    console = Console()
    if not console.is_terminal:
        # off a terminal nothing reads the width: keep tables whole in logs
        console = Console(width=max(console.width, LOG_WIDTH))
    for i, path in enumerate(result.reports):
        console.print(comparison_table(result, i, path))


def _fmt(v, scale: float, digits: int, sign: bool = False) -> str:
    if v is None:
        return "-"
    return f"{scale * v:+.{digits}f}" if sign else f"{scale * v:.{digits}f}"


def comparison_table(result, i: int, path):
    """The rich table of report ``i`` against the baseline."""
    from rich.table import Table

    pct = f"{100 * result.level:g}%"
    table = Table(title=f"{path} vs {result.baseline}\n({result.images} images, {result.n_boot} paired resamples; quality in %, GFLOPs per image)")
    for name in ("metric", "baseline", "value", "diff", f"{pct} interval", "p(diff<=0)", "p(diff>=0)"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    for row in result.rows_of(i):
        gflops = row.metric.startswith("gflops")
        scale, digits = (1.0, 4) if gflops else (100.0, 2)
        d = row.difference
        diff = None if row.baseline is None or row.value is None else row.value - row.baseline
        interval = "-" if d.lo != d.lo else f"[{scale * d.lo:+.{digits}f}, {scale * d.hi:+.{digits}f}]"
        label = "encoder GFLOPs" if row.metric == "gflops_encoder_mean" else row.metric
        p = (lambda x: "-" if x != x else f"{x:.3f}")
        table.add_row(label, _fmt(row.baseline, scale, digits), _fmt(row.value, scale, digits),
                      _fmt(diff, scale, digits, sign=True), interval, p(d.p_le_0), p(d.p_ge_0))
    return table
