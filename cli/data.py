"""``adaseg data``: write the synthetic set, validate a dataset, describe it, time its loader."""

from __future__ import annotations

import click

from adaseg.cli.numbers import seed_type
from adaseg.choices import SPLITS


def _data_error(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group(name="data")
def data() -> None:
    """Datasets: --data specs are 'synthetic' (default), coco:ROOT, coco-det:ROOT (COCO
    detection: instances JSON + images), cityscapes:ROOT, ade20k:ROOT or a COCO-panoptic folder."""


@data.command(name="synth")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to create (must not exist).")
@click.option("--n-train", default=1000, show_default=True, type=click.IntRange(min=0))
@click.option("--n-val", default=200, show_default=True, type=click.IntRange(min=1))
@click.option("--size", default=128, show_default=True, type=click.IntRange(min=32), help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True, type=seed_type())
@click.option("--workers", default=None, type=click.IntRange(min=1), help="Generator processes [min(4, CPUs)].")
def synth(out: str, n_train: int, n_val: int, size: int, seed: int, workers: int | None) -> None:
    """Write the built-in synthetic panoptic set to OUT in COCO panoptic format (plus COCO
    instances JSONs of its things: --data coco-det:OUT)."""
    import os
    import time

    from adaseg.data.synthetic.generate import write_synthetic

    if os.path.exists(out):
        raise click.BadParameter(f"{out} already exists; choose a new folder", param_hint="--out")
    t0 = time.perf_counter()
    write_synthetic(out, n_train=n_train, n_val=n_val, size=size, seed=seed, workers=workers)
    dt = time.perf_counter() - t0
    click.echo(f"wrote {n_train} train + {n_val} val images ({size}x{size}, seed {seed}) to {out} "
               f"in {dt:.1f} s")


@data.command(name="check")
@click.argument("spec", default="synthetic")
@click.option("--split", "splits", multiple=True, type=click.Choice(SPLITS),
              help="Split(s) to check [train and val].")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Check only the first N images per split.")
def check(spec: str, splits: tuple[str, ...], limit: int | None) -> None:
    """Validate dataset SPEC file by file; exit 1 when any problem is found."""
    from adaseg.data.check import check_dataset
    from adaseg.data.panoptic_io import DataError

    try:
        reports = check_dataset(spec, splits or ("train", "val"), limit=limit)
    except DataError as exc:
        raise _data_error(exc) from None
    total = 0
    for rep in reports:
        total += len(rep.problems)
        status = "no problems" if not rep.problems else f"{len(rep.problems)} problem(s)"
        click.echo(f"{spec} {rep.split}: {rep.checked}/{rep.num_images} images checked, {status}")
        for p in rep.problems:
            # one line per problem; the message starts with the file it is about
            click.echo(f"  {p.message}")
    if total:
        raise click.ClickException(f"{total} problem(s) found in {spec}")


@data.command(name="info")
@click.argument("spec", default="synthetic")
@click.option("--split", default="val", show_default=True, type=click.Choice(SPLITS))
def info(spec: str, split: str) -> None:
    """Categories, sizes and (synthetic) difficulty histogram of SPEC."""
    from rich.console import Console
    from rich.table import Table

    from adaseg.data import DataError, build_dataset
    from adaseg.data.check import summarize_difficulty

    try:
        ds = build_dataset(spec, split)
    except DataError as exc:
        raise _data_error(exc) from None
    meta = ds.meta
    console = Console()
    table = Table(title=f"{meta.name} ({meta.task}) {split}: {len(ds)} images, {meta.num_classes} classes")
    for col in ("train id", "dataset id", "name", "thing"):
        table.add_column(col)
    for i, c in enumerate(meta.categories):
        table.add_row(str(i), str(c.id), c.name, "yes" if c.isthing else "no")
    console.print(table)
    hist = summarize_difficulty(ds)
    if hist:
        console.print("difficulty (generator metadata; analysis only): mean "
                      f"{hist['mean']:.2f}; " + ", ".join(f"{b}: {n}" for b, n in zip(hist["bins"], hist["counts"])))


@data.command(name="speed")
@click.argument("spec", default="synthetic")
@click.option("--split", default="train", show_default=True, type=click.Choice(SPLITS))
@click.option("--train/--eval", "train", default=True, show_default=True, help="Training or eval transforms.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0))
@click.option("--batches", default=40, show_default=True, type=click.IntRange(min=1))
def speed(spec: str, split: str, train: bool, batch_size: int, workers: int, batches: int) -> None:
    """Loader throughput (images/s, after one warm-up batch) of SPEC."""
    import time

    from adaseg.data import DataError, build_dataset, build_loader

    try:
        ds = build_dataset(spec, split, train=train)
    except DataError as exc:
        raise _data_error(exc) from None
    loader = build_loader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, seed=0, drop_last=True)
    it = iter(loader)
    next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            break
        n += batch["images"].shape[0]
    dt = time.perf_counter() - t0
    click.echo(f"{spec} {split} ({'train' if train else 'eval'} transforms): {n} images in {dt:.2f} s = "
               f"{n / dt:.0f} images/s (batch {batch_size}, {workers} workers)")
