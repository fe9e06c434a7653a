"""``adaseg bench op``: multi-scale deformable attention, reference vs compiled extension."""

from __future__ import annotations

import json
import os
import tempfile

import click


@click.command(name="op")
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda[:i] where a GPU is present.")
@click.option("--dtype", type=click.Choice(["fp32", "fp64", "fp16", "bf16"]), default="fp32", show_default=True,
              help="Input dtype (the CPU kernels take fp32/fp64; fp16/bf16 are CUDA only).")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Timed runs per figure (median).")
@click.option("--case", "case_names", multiple=True, metavar="NAME", help="Only these shapes (repeatable): m2f-512, m2f_tiny-128.")
@click.option("--locations", type=click.Choice(["encoder", "uniform"]), default="encoder", show_default=True,
              help="Sampling pattern: around each token as in a deformable encoder, or uniform over the image.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for both variants (default: torch's, i.e. all cores).")
@click.option("--no-memory", is_flag=True, help="Skip the peak-memory measurement.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the figures to this JSON file (atomically).")
def op(device: str, dtype: str, repeats: int, case_names: tuple[str, ...], locations: str, threads: int | None,
       no_memory: bool, json_path: str | None) -> None:
    """Time ms_deform_attn forward and forward+backward, reference vs extension, with peak extra memory.

    Prints the figures and the ratios (speed-up, memory ext/reference) measured in this one run.
    """
    import torch

    from adaseg.bench import op as bench

    dtypes = {"fp32": torch.float32, "fp64": torch.float64, "fp16": torch.float16, "bf16": torch.bfloat16}
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise click.BadParameter(f"{device!r} is not a device ({exc})", param_hint="--device") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter(f"{device!r}: no CUDA device is available", param_hint="--device")
    if dev.type not in ("cpu", "cuda"):
        raise click.BadParameter(f"{device!r}: only cpu and cuda are supported", param_hint="--device")
    known = {c.name: c for c in bench.CASES}
    unknown = [n for n in case_names if n not in known]
    if unknown:
        raise click.BadParameter(f"unknown case {unknown[0]!r}; choose from {', '.join(known)}", param_hint="--case")
    json_dir = None
    if json_path:
        json_dir = os.path.dirname(os.path.abspath(json_path))
        if not os.path.isdir(json_dir):
            raise click.BadParameter(f"directory {json_dir} does not exist", param_hint="--json")
    cases = tuple(known[n] for n in case_names) if case_names else bench.CASES
    if threads is not None:
        torch.set_num_threads(threads)  # the memory probes inherit it
    try:
        info, rows = bench.run(cases=cases, device=device, dtype=dtypes[dtype], repeats=repeats, memory=not no_memory,
                               locations=locations)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(bench.format_report(info, rows, cases))
    if json_path:
        fd, tmp = tempfile.mkstemp(dir=json_dir, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"info": info, "rows": [vars(r) for r in rows], "ratios": bench.ratios(rows)}, f, indent=2)
        os.replace(tmp, json_path)
        click.echo(f"wrote {json_path}")
