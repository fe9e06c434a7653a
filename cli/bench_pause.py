"""``adaseg bench pause``: time PAUMER's pausing ops, unfused PyTorch vs Triton."""

from __future__ import annotations

import json
import os
import tempfile

import click

from adaseg.cli.numbers import FiniteFloat


@click.command(name="pause")
@click.option("--dtype", type=click.Choice(["bf16", "fp16", "fp32"]), default="bf16", show_default=True,
              help="Token/decoder dtype on the GPU (the CPU fallback times float32).")
@click.option("--ratio", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=0.4, show_default=True,
              help="Pause ratio tau of the timed stage.")
@click.option("--repeats", type=click.IntRange(min=1), default=50, show_default=True,
              help="Timed runs per op (GPU: do_bench's budget in ms).")
@click.option("--case", "case_names", multiple=True, metavar="NAME",
              help="Only these shapes (repeatable): vit-ti/cityscapes, vit-ti/ade20k, vit-s/cityscapes, vit-s/ade20k, m2f/coco.")
@click.option("--cpu-batch", type=click.IntRange(min=1), default=2, show_default=True,
              help="Batch cap when no GPU is present.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the figures to this JSON file (atomically).")
def pause(dtype: str, ratio: float, repeats: int, case_names: tuple[str, ...], cpu_batch: int, json_path: str | None) -> None:
    """Entropy / top-k keep / assembly: unfused PyTorch vs Triton, and the entropy kernel's share of peak bandwidth.

    Without a CUDA device the Triton figures are reported as unmeasured and PyTorch is timed on the CPU.
    """
    from adaseg.bench import pause as bench

    if not 0.0 < ratio < 1.0:
        raise click.BadParameter(f"must be in (0, 1), got {ratio}", param_hint="--ratio")
    known = {c.name: c for c in bench.CASES}
    unknown = [n for n in case_names if n not in known]
    if unknown:
        raise click.BadParameter(f"unknown case {unknown[0]!r}; choose from {', '.join(known)}", param_hint="--case")
    cases = tuple(known[n] for n in case_names) if case_names else bench.CASES
    info, rows = bench.run(cases=cases, dtype=dtype, ratio=ratio, repeats=repeats, cpu_batch=cpu_batch)
    click.echo(bench.format_report(info, rows))
    if json_path:
        directory = os.path.dirname(os.path.abspath(json_path))
        if not os.path.isdir(directory):
            raise click.BadParameter(f"directory {directory} does not exist", param_hint="--json")
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"info": info, "rows": [r.as_dict() for r in rows]}, f, indent=2)
        os.replace(tmp, json_path)
        click.echo(f"wrote {json_path}")
