"""``adaseg bench model``: encoder and whole-model images/s per arm (no pausing, pausing with the
reference ops, the lean path, CUDA graphs, exits at a fixed mix), each with its FLOP-ideal
speed-up and its realisation (issue 23)."""

from __future__ import annotations

import json
import os
import tempfile

import click

ARM_CHOICES = ("none", "reference", "lean", "graph", "exits", "exits-graph")  # mirrors adaseg.bench.model.ARMS


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=flag) from None
    if not values or any(v < 1 for v in values):
        raise click.BadParameter(f"expected positive integers, got {text!r}", param_hint=flag)
    return values


@click.command(name="model")
@click.option("--model", "model_name", default="m2f_swin_t", show_default=True, metavar="NAME",
              help="A registered model (adaseg.list_models()), e.g. m2f_swin_t, segmenter_vit_ti, segmenter_vit_s.")
@click.option("--size", type=click.IntRange(min=32, max=4096), default=512, show_default=True,
              help="Square input side (pixels).")
@click.option("--batch", "batch_text", default="1,32", show_default=True, metavar="B[,B...]",
              help="Batch sizes (give smaller ones on a CPU, e.g. --batch 1).")
@click.option("--pause", default="3:0.4,5:0.3", show_default=True, help="The pause plan of the pausing arms.")
@click.option("--exit-mix", "exit_mix_text", default=None, metavar="L[,L...]",
              help="Exits the images of the exits arms cycle through [default: depth/3, 2 depth/3, depth].")
@click.option("--arm", "arms", type=click.Choice(ARM_CHOICES), multiple=True,
              help="Only these arms (repeatable) [default: all; the graph arms need CUDA].")
@click.option("--scope", "scopes", type=click.Choice(("encoder", "model")), multiple=True,
              help="Encoder alone and/or the whole model (repeatable) [default: both].")
@click.option("--repeats", type=click.IntRange(min=1, max=10000), default=5, show_default=True,
              help="Timed rounds (each runs every arm once, interleaved).")
@click.option("--warmup", type=click.IntRange(min=0, max=1000), default=1, show_default=True, help="Untimed rounds.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--dtype", type=click.Choice(("fp32", "bf16", "fp16")), default=None,
              help="Model and input dtype [default: bf16 on CUDA, fp32 on CPU].")
@click.option("--threads", type=click.IntRange(min=1, max=1024), default=None, help="torch threads.")
@click.option("--clock", type=click.Choice(("wall", "cpu")), default="wall", show_default=True,
              help="wall: elapsed time (images/s); cpu (CPU device only): the process's CPU time, which other "
                   "processes on a shared machine do not inflate.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the figures to this JSON file (atomically).")
def model(model_name, size, batch_text, pause, exit_mix_text, arms, scopes, repeats, warmup, device, dtype, threads,
          clock, json_path) -> None:
    """Encoder and whole-model images/s under inference_mode, per arm, with speed-up over no pausing,
    the FLOP-ideal speed-up and the realisation (measured / ideal), the arms interleaved in one run."""
    from adaseg.models.registry import list_models

    if model_name not in list_models():
        raise click.BadParameter(f"unknown model {model_name!r}; choose from {', '.join(list_models())}",
                                 param_hint="'--model'")
    batches = _ints(batch_text, "'--batch'")
    exit_mix = None if exit_mix_text is None else _ints(exit_mix_text, "'--exit-mix'")
    from adaseg.models.adaptive.plan import PausePlan

    try:
        plan = PausePlan.parse(pause)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--pause'") from None
    if plan is None:
        raise click.BadParameter("the pausing arms need a pause plan", param_hint="'--pause'")
    import torch

    dev = torch.device(device) if device in ("cpu", "cuda") or device.startswith("cuda:") else None
    if dev is None:
        raise click.BadParameter(f"expected cpu or cuda[:N], got {device!r}", param_hint="'--device'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("no CUDA device is available here", param_hint="'--device'")
    if dev.type == "cpu" and any(a in ("graph", "exits-graph") for a in arms):
        raise click.BadParameter("the graph arms need a CUDA device (they are left out on CPU)", param_hint="'--arm'")
    if clock == "cpu" and dev.type != "cpu":
        raise click.BadParameter("the CPU-time clock is for --device cpu (a GPU's time is wall time)",
                                 param_hint="'--clock'")
    if json_path:
        directory = os.path.dirname(os.path.abspath(json_path))
        if not os.path.isdir(directory):
            raise click.BadParameter(f"directory {directory} does not exist", param_hint="'--json'")
    from adaseg.bench import model as bench

    chosen = arms or bench.ARMS
    if "none" not in chosen:
        chosen = ("none", *chosen)  # every ratio is against it
    try:
        info, rows = bench.run(model_name=model_name, size=size, batches=batches, pause=str(plan), exit_mix=exit_mix,
                               arms=tuple(a for a in bench.ARMS if a in chosen), repeats=repeats, warmup=warmup,
                               device=str(dev), dtype=dtype or ("bf16" if dev.type == "cuda" else "fp32"),
                               threads=threads, scopes=scopes or ("encoder", "model"), clock=clock, log=None)
    except ValueError as e:  # a pause plan or exit mix the model's depth does not have
        raise click.ClickException(str(e)) from None
    click.echo(bench.format_report(info, rows))
    if json_path:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(json_path)), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"info": info, "rows": [r.as_dict() for r in rows]}, f, indent=2)
        os.replace(tmp, json_path)
        click.echo(f"wrote {json_path}")
