"""``adaseg score``: metrics of prediction files on disk against ground truth.

panoptic   COCO-panoptic prediction JSON + PNG folder vs GT JSON + PNG folder (PQ / SQ / RQ)
semantic   folder of label PNGs (contiguous ids, 255 = void) vs GT folder (mIoU)
instance   COCO results JSON (RLE masks) vs COCO instances JSON, or vs a panoptic GT (mask AP)
"""

from __future__ import annotations

import json

import click

from adaseg.choices import SPLITS


def _emit(result: dict, as_json: bool, render) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        render(result)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


@click.group(name="score")
def score() -> None:
    """Score prediction files against ground truth (PQ, mIoU, mask AP)."""


@score.command(name="panoptic")
@click.option("--pred-json", required=True, type=click.Path(dir_okay=False), help="Prediction panoptic JSON.")
@click.option("--pred-dir", required=True, type=click.Path(file_okay=False), help="Prediction PNG folder.")
@click.option("--gt-json", type=click.Path(dir_okay=False), default=None, help="GT COCO-panoptic JSON.")
@click.option("--gt-dir", type=click.Path(file_okay=False), default=None, help="GT panoptic PNG folder.")
@click.option("--data", "spec", default=None, help="Instead of --gt-json/--gt-dir: the GT of this dataset spec.")
@click.option("--split", default="val", show_default=True, type=click.Choice(SPLITS), help="With --data.")
@click.option("--workers", default=0, show_default=True, type=click.IntRange(min=0), help="Processes (0/1: none).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def panoptic(pred_json: str, pred_dir: str, gt_json: str | None, gt_dir: str | None, spec: str | None, split: str,
             workers: int, as_json: bool) -> None:
    """PQ / SQ / RQ (All, Things, Stuff, per class), panopticapi semantics."""
    from adaseg.data.build import panoptic_gt_paths
    from adaseg.data.panoptic_io import DataError, load_json
    from adaseg.eval.pq import pq_compute

    if spec is not None and (gt_json is not None or gt_dir is not None):
        raise click.UsageError("give --data or --gt-json/--gt-dir, not both")
    if spec is None and (gt_json is None or gt_dir is None):
        raise click.UsageError("give --gt-json and --gt-dir, or --data SPEC")
    try:
        if spec is not None:
            gt_json, gt_dir = panoptic_gt_paths(spec, split)
        result = pq_compute(gt_json, pred_json, gt_dir, pred_dir, num_workers=workers)
        gt = load_json(gt_json, what="ground-truth panoptic")  # for the class names
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    names = {int(c["id"]): c["name"] for c in gt["categories"]}

    def render(res: dict) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="Panoptic quality (%)")
        for col in ("category", "PQ", "SQ", "RQ", "N"):
            table.add_column(col, justify="right")
        for cid, v in sorted(res["per_class"].items()):
            table.add_row(names.get(cid, str(cid)), _pct(v["pq"]), _pct(v["sq"]), _pct(v["rq"]), "")
        for group in ("All", "Things", "Stuff"):
            g = res[group]
            table.add_row(f"[bold]{group}", _pct(g["pq"]), _pct(g["sq"]), _pct(g["rq"]), str(g["n"]))
        Console().print(table)

    _emit({**result, "per_class": {str(k): v for k, v in result["per_class"].items()}} if as_json else result,
          as_json, render)


@score.command(name="semantic")
@click.option("--gt-dir", required=True, type=click.Path(file_okay=False), help="GT label PNGs (255 = void).")
@click.option("--pred-dir", required=True, type=click.Path(file_okay=False), help="Predicted label PNGs.")
@click.option("--data", "spec", default=None, help="Dataset spec giving class names and count [synthetic].")
@click.option("--num-classes", type=click.IntRange(min=1), default=None, help="Instead of --data: class count.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def semantic(gt_dir: str, pred_dir: str, spec: str | None, num_classes: int | None, as_json: bool) -> None:
    """mIoU and per-class IoU of PNGs with the same file names in both folders."""
    from adaseg.data import DataError, build_dataset
    from adaseg.eval.miou import miou_folders

    if spec is not None and num_classes is not None:
        raise click.UsageError("give --data or --num-classes, not both")
    try:
        names = None
        if num_classes is None:
            meta = build_dataset(spec or "synthetic", "val").meta
            num_classes, names = meta.num_classes, meta.class_names
        result = miou_folders(gt_dir, pred_dir, num_classes=num_classes, class_names=names)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None

    def render(res: dict) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"Semantic segmentation ({res['num_images']} images): IoU (%)")
        table.add_column("class")
        table.add_column("IoU", justify="right")
        for n, v in res["per_class"].items():
            table.add_row(n, _pct(v))
        table.add_row("[bold]mIoU", _pct(res["mIoU"]))
        table.add_row("pixel acc", _pct(res["pixel_acc"]))
        Console().print(table)

    _emit(result, as_json, render)


@score.command(name="instance")
@click.option("--pred-json", required=True, type=click.Path(dir_okay=False), help="COCO results JSON (RLE masks).")
@click.option("--gt-json", type=click.Path(dir_okay=False), default=None, help="COCO instances GT JSON.")
@click.option("--panoptic-json", type=click.Path(dir_okay=False), default=None,
              help="Instead of --gt-json: panoptic GT JSON (thing segments become instances).")
@click.option("--panoptic-dir", type=click.Path(file_okay=False), default=None, help="With --panoptic-json.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def instance(pred_json: str, gt_json: str | None, panoptic_json: str | None, panoptic_dir: str | None,
             as_json: bool) -> None:
    """Mask AP (COCOeval, iouType segm)."""
    from adaseg.data.panoptic_io import DataError, load_json
    from adaseg.eval.ap import instance_ap, instances_from_panoptic, load_results

    if (gt_json is None) == (panoptic_json is None):
        raise click.UsageError("give exactly one of --gt-json or --panoptic-json")
    if panoptic_json is not None and panoptic_dir is None:
        raise click.UsageError("--panoptic-json needs --panoptic-dir")
    try:
        if gt_json is not None:
            gt, gt_name = load_json(gt_json, what="instances ground-truth"), gt_json
        else:
            gt, gt_name = instances_from_panoptic(panoptic_json, panoptic_dir), panoptic_json
        result = instance_ap(gt, load_results(pred_json), gt_name=gt_name, results_name=pred_json)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    names = {int(c["id"]): c.get("name", str(c["id"])) for c in gt["categories"]}

    def render(res: dict) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="Instance segmentation: mask AP (%)")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            table.add_row(f"[bold]{k}" if k == "AP" else k, _pct(res[k]))
        for cid, v in sorted(res["per_class"].items()):
            table.add_row(f"AP {names.get(cid, cid)}", _pct(v))
        Console().print(table)

    _emit({**result, "per_class": {str(k): v for k, v in result["per_class"].items()}} if as_json else result,
          as_json, render)

