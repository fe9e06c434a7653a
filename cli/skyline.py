"""``adaseg skyline SWEEP... --label NAME ... --out DIR``: several sweeps (one per method, e.g.
Segmenter-PAUMER, its early exit, SETR-PAUMER) side by side -- every operating point and each
sweep's skyline, the best quality reachable at each GFLOPs budget and at each throughput
(PAUMER App. J, Figure 12). Reads sweep files only; writes ``skyline_gflops.png``,
``skyline_ips.png`` and ``skyline.json`` into ``--out`` and prints the skylines."""

from __future__ import annotations

import click


@click.command(name="skyline")
@click.argument("sweeps", nargs=-1, required=True, type=click.Path(), metavar="SWEEP...")
@click.option("--label", "labels", multiple=True, metavar="NAME",
              help="A name per SWEEP, in order (repeat; default: the sweep folders' paths).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder for the plots and skyline.json (created; files of the same names replaced).")
@click.option("--title", default="", help="Plot title.")
@click.option("--json", "as_json", is_flag=True, help="Print skyline.json's content instead of tables.")
def skyline(sweeps, labels, out, title, as_json):
    """Skylines of several sweeps: best quality at each GFLOPs budget and throughput."""
    import json
    from pathlib import Path

    from adaseg.analysis.skyline import SkylineError, check_comparable, read_series, skyline_figure, skyline_json

    if labels and len(labels) != len(sweeps):
        raise click.BadParameter(f"{len(labels)} labels for {len(sweeps)} sweeps: give one --label per SWEEP",
                                 param_hint="'--label'")
    if len(set(labels)) != len(labels):
        raise click.BadParameter("labels must differ", param_hint="'--label'")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise click.BadParameter(f"{out} is not a folder", param_hint="'--out'")
    try:
        series = [read_series(path, label) for path, label in zip(sweeps, labels or [str(s) for s in sweeps])]
        check_comparable(series)
    except SkylineError as exc:
        raise click.ClickException(str(exc)) from None
    import io

    from adaseg.storage.atomic import atomic_write_bytes, atomic_write_json

    data = skyline_json(series)
    pictures = {}
    for axis in ("gflops", "ips"):  # drawn before anything is written
        buf = io.BytesIO()
        skyline_figure(series, axis, title=title).savefig(buf, format="png", dpi=120)
        pictures[axis] = buf.getvalue()
    out_dir.mkdir(parents=True, exist_ok=True)
    for axis, png in pictures.items():
        atomic_write_bytes(out_dir / f"skyline_{axis}.png", png)
    atomic_write_json(out_dir / "skyline.json", data)
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for axis, what in (("gflops", "GFLOPs"), ("ips", "images/s")):
        table = Table(title=f"skylines: best {data['metric']} at each {what} (90% intervals over images)")
        for name in ("method", "point", data["metric"], "interval", "GFLOPs", "images/s"):
            table.add_column(name, justify="left" if name in ("method", "point") else "right")
        for s in data["series"]:
            for r in s["skyline"][axis]:
                iv = "-" if r["quality_lo"] is None else f"[{100 * r['quality_lo']:.2f}, {100 * r['quality_hi']:.2f}]"
                table.add_row(s["label"], str(r["point"]), f"{100 * r['quality']:.2f}", iv,
                              f"{r['gflops_total_mean']:.4f}", f"{r['images_per_s']:.1f}")
        console.print(table)
    console.print(f"skyline: wrote {out_dir / 'skyline_gflops.png'}, {out_dir / 'skyline_ips.png'} and "
                  f"{out_dir / 'skyline.json'}")
