"""``adaseg bench pause``: one PAUMER pause stage timed as a unit, registered ops vs the lean path."""

from __future__ import annotations

import json
import os
import tempfile

import click

from adaseg.cli.numbers import FiniteFloat

CASE_NAMES = ("vit-ti/ade20k-512", "vit-s/ade20k-512", "vit-ti/cityscapes-768", "vit-s/cityscapes-768",
              "m2f/coco-1024")  # mirrors adaseg.bench.pause.CASES (kept literal: --help stays light)


@click.command(name="pause")
@click.option("--dtype", type=click.Choice(["bf16", "fp16", "fp32"]), default="bf16", show_default=True,
              help="Token/decoder dtype on the GPU (the CPU times float32).")
@click.option("--ratio", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=0.4, show_default=True,
              help="Pause ratio tau of the timed stage.")
@click.option("--repeats", type=click.IntRange(min=1, max=100000), default=50, show_default=True,
              help="Stages per timing (CPU: timed one by one, median).")
@click.option("--case", "case_names", multiple=True, type=click.Choice(CASE_NAMES), metavar="NAME",
              help=f"Only these shapes (repeatable): {', '.join(CASE_NAMES)}.")
@click.option("--arm", "arms", multiple=True, type=click.Choice(("ops", "lean")),
              help="Only these arms (repeatable): ops (the registered ops), lean (the lean stage).")
@click.option("--batch", type=click.IntRange(min=1, max=4096), default=None,
              help="Every case at this batch (e.g. 1) instead of its own (32 for ViT, 2 for Mask2Former).")
@click.option("--cpu-batch", type=click.IntRange(min=1, max=4096), default=2, show_default=True,
              help="Batch cap when no GPU is present.")
@click.option("--backend", type=click.Choice(("auto", "reference", "triton")), default=None,
              help="ADASEG_PAUSE_BACKEND for both arms [default: as set, else auto].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the figures to this JSON file (atomically).")
def pause(dtype: str, ratio: float, repeats: int, case_names: tuple[str, ...], arms: tuple[str, ...],
          batch: int | None, cpu_batch: int, backend: str | None, json_path: str | None) -> None:
    """One pause stage (entropy, keep, kept tokens, positions, paused rows filed) at the paper's shapes,
    through the registered ops and the lean inference path: host time, and on a GPU device time (CUDA
    graph replay) and eager time (CUDA events), outputs checked against the reference ops."""
    from adaseg.bench import pause as bench

    if not 0.0 < ratio < 1.0:
        raise click.BadParameter(f"must be in (0, 1), got {ratio}", param_hint="--ratio")
    if json_path:
        directory = os.path.dirname(os.path.abspath(json_path))
        if not os.path.isdir(directory):
            raise click.BadParameter(f"directory {directory} does not exist", param_hint="--json")
    known = {c.name: c for c in bench.CASES}
    cases = tuple(known[n] for n in case_names) if case_names else bench.CASES
    chosen = tuple(a for a in bench.ARMS if a in arms) if arms else bench.ARMS
    info, rows = bench.run(cases=cases, arms=chosen, dtype=dtype, ratio=ratio, repeats=repeats, cpu_batch=cpu_batch,
                           batch=batch, backend=backend)
    click.echo(bench.format_report(info, rows))
    if json_path:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(json_path)), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"info": info, "rows": [r.as_dict() for r in rows]}, f, indent=2)
        os.replace(tmp, json_path)
        click.echo(f"wrote {json_path}")
