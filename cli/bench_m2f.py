"""``adaseg bench m2f``: adaseg's Mask2Former vs transformers' on the same weights (CPU)."""

from __future__ import annotations

import json
import os
import tempfile

import click

SETTING_CHOICES = ("swin_t", "small")  # mirrors adaseg.bench.m2f.SETTINGS (kept literal: --help stays light)
ENCODER_CHOICES = ("deform", "lite", "rt")  # mirrors adaseg.models.mask2former.encoder_kinds.ENCODER_KINDS


@click.command(name="m2f")
@click.option("--setting", type=click.Choice(SETTING_CHOICES), default="swin_t", show_default=True,
              help="swin_t: the paper's Swin-T COCO configuration; small: a narrower CPU-friendly one.")
@click.option("--size", type=click.IntRange(min=32), default=512, show_default=True, help="Square input side (pixels).")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True, help="Timed runs per model.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads (default: torch's choice).")
@click.option("--no-exits", is_flag=True, help="Skip the per-exit timings.")
@click.option("--encoder", "encoders", type=click.Choice(ENCODER_CHOICES), multiple=True,
              help="Instead of the transformers comparison, time adaseg's Mask2Former with these encoder kinds "
                   "(repeat the option: --encoder deform --encoder lite --encoder rt), identical weights outside "
                   "the encoder, ratios to the first; with --setting small, the tiny CPU models.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the figures to this JSON file (atomically).")
def m2f(setting: str, size: int, repeats: int, threads: int | None, no_exits: bool, encoders: tuple[str, ...],
        json_path: str | None) -> None:
    """Forward time of adaseg's Mask2Former vs transformers' (same weights, CPU, batch 1), the ratio
    measured in one run, and adaseg's encoder time at every exit; or, with --encoder, adaseg's
    Mask2Former with each encoder kind (deform / lite / rt), timed and FLOP-counted in one run."""
    from adaseg.bench import m2f as bench

    if json_path:
        directory = os.path.dirname(os.path.abspath(json_path))
        if not os.path.isdir(directory):
            raise click.BadParameter(f"directory {directory} does not exist", param_hint="'--json'")
    if encoders:
        if no_exits:
            raise click.UsageError("--no-exits applies to the transformers comparison, not to --encoder")
        if len(set(encoders)) != len(encoders):
            raise click.BadParameter(f"each kind once, got {', '.join(encoders)}", param_hint="'--encoder'")
        from adaseg.bench import m2f_encoders

        result = m2f_encoders.run(setting=setting, encoders=encoders, size=size, repeats=repeats, threads=threads)
        _report(m2f_encoders.format_report(result), result, json_path)
        return
    try:
        bench.require_transformers()
    except bench.BenchUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    result = bench.run(setting=setting, size=size, repeats=repeats, threads=threads, exits=not no_exits)
    _report(bench.format_report(result), result, json_path)


def _report(text: str, result: dict, json_path: str | None) -> None:
    """Print the report; with --json also write the figures (atomically)."""
    click.echo(text)
    if json_path:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(json_path)), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, json_path)
        click.echo(f"wrote {json_path}")
