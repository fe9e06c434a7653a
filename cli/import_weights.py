"""``adaseg import-weights``: convert a HF Mask2Former directory or a timm backbone checkpoint
into an adaseg checkpoint (``.safetensors`` + ``.json`` sidecar, written atomically)."""

from __future__ import annotations

import os

import click


def _thing_ids(value: str | None):
    """``--thing-ids``: None (recognise the label set), ``none`` (no things) or ``0,1,2``."""
    if value is None:
        return None
    if value.strip().lower() == "none":
        return ()
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated class ids or 'none'", param_hint="'--thing-ids'") from None


@click.command(name="import-weights")
@click.option("--hf", "hf_dir", type=click.Path(file_okay=False), default=None,
              help="HF transformers Mask2Former or DETR (DetrForObjectDetection, transformers ResNet) directory "
                   "(config.json + model.safetensors or pytorch_model.bin).")
@click.option("--timm-backbone", "timm_file", type=click.Path(dir_okay=False), default=None,
              help="timm-format backbone checkpoint (.safetensors, .pth, .bin); needs --model.")
@click.option("--model", "backbone_name", default=None, metavar="NAME",
              help="Backbone the timm checkpoint is for (e.g. swin_t, resnet50, vit_s).")
@click.option("--thing-ids", default=None, metavar="IDS",
              help="With --hf: contiguous thing class ids '0,1,...' or 'none' (default: recognise COCO / Cityscapes labels).")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True,
              help="Checkpoint to write (.safetensors; a .json sidecar is written next to it).")
def import_weights(hf_dir, timm_file, backbone_name, thing_ids, out):
    """Convert pretrained weights into an adaseg checkpoint.

    \b
      adaseg import-weights --hf mask2former-swin-tiny-coco-panoptic/ --out m2f_swin_t.safetensors
      adaseg import-weights --hf detr-resnet-50/ --out detr_r50.safetensors
      adaseg import-weights --timm-backbone swin_tiny.safetensors --model swin_t --out swin_t.safetensors
    """
    if (hf_dir is None) == (timm_file is None):
        raise click.UsageError("give exactly one of --hf DIR or --timm-backbone FILE")
    if not out.endswith(".safetensors"):
        raise click.BadParameter(f"{out!r}: must end in .safetensors", param_hint="'--out'")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise click.BadParameter(f"directory {out_dir} does not exist", param_hint="'--out'")
    if hf_dir is not None:
        if backbone_name is not None:
            raise click.UsageError("--model goes with --timm-backbone, not --hf (the HF config names the model)")
        if _hf_model_type(hf_dir) == "detr":
            if thing_ids is not None:
                raise click.UsageError("--thing-ids goes with a Mask2Former; a DETR gives every class boxes")
            _import_hf_detr(hf_dir, out)
        else:
            _import_hf(hf_dir, _thing_ids(thing_ids), out)
    else:
        if backbone_name is None:
            raise click.UsageError("--timm-backbone needs --model NAME (the backbone it is for)")
        if thing_ids is not None:
            raise click.UsageError("--thing-ids goes with --hf")
        _import_timm(timm_file, backbone_name, out)


def _hf_model_type(hf_dir: str):
    """``model_type`` of ``hf_dir/config.json`` (None when unreadable: the importer then names the problem)."""
    import json

    try:
        with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None
    return cfg.get("model_type") if isinstance(cfg, dict) else None


def _import_hf_detr(hf_dir: str, out: str) -> None:
    from adaseg.models.hf.detr_import import DETR_KIND, from_hf_detr
    from adaseg.models.hf.importer import HFConfigError, HFWeightsError
    from adaseg.storage.checkpoint import CheckpointError, save_checkpoint

    try:
        model, info = from_hf_detr(hf_dir, return_info=True)
    except (HFConfigError, HFWeightsError) as exc:
        raise click.ClickException(str(exc)) from None
    from pathlib import Path

    from adaseg.models.hf.described import describe

    extra = {"source": "huggingface", "source_path": os.path.abspath(hf_dir), "class_names": info.class_names,
             "dropped": info.dropped, "initialised": info.initialised,
             # categories (every class has boxes), untrained parts and resize travel with the file
             **describe(class_names=info.class_names, thing_ids=range(len(info.class_names)),
                        initialised=info.initialised, directory=Path(info.weights_file).parent)}
    try:
        meta = save_checkpoint(out, model.state_dict(), kind=DETR_KIND, config=info.config, extra=extra)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from None
    cfg = info.config["model"]
    n = sum(p.numel() for p in model.parameters())
    click.echo(f"imported {info.weights_file}: DETR ResNet ({info.config['backbone']['settings']['block']}), "
               f"{cfg['num_classes']} classes, {cfg['num_queries']} queries, {cfg['enc_layers']} encoder / "
               f"{cfg['dec_layers']} decoder layers, {n / 1e6:.2f}M parameters")
    click.echo(f"{len(info.initialised)} adaseg-only keys keep their initial values (PAUMER auxiliary decoders: "
               f"untrained)")
    click.echo(f"wrote {out} (fingerprint {meta.fingerprint[:12]})")


def _import_hf(hf_dir: str, thing_ids, out: str) -> None:
    from adaseg.models.hf.importer import MODEL_KIND, HFConfigError, HFWeightsError, from_hf_mask2former
    from adaseg.storage.checkpoint import CheckpointError, save_checkpoint

    try:
        model, info = from_hf_mask2former(hf_dir, thing_ids=thing_ids, return_info=True)
    except (HFConfigError, HFWeightsError) as exc:
        raise click.ClickException(str(exc)) from None
    from pathlib import Path

    from adaseg.models.hf.described import describe

    extra = {
        "source": "huggingface",
        "source_path": os.path.abspath(hf_dir),
        "class_names": info.class_names,
        "dropped": info.dropped,
        "initialised": info.initialised,
        # categories, untrained parts and resize travel with the file (adaseg.models.hf.described)
        **describe(class_names=info.class_names, thing_ids=info.thing_ids, initialised=info.initialised,
                   directory=Path(info.weights_file).parent),
    }
    try:
        meta = save_checkpoint(out, model.state_dict(), kind=MODEL_KIND, config=info.config, extra=extra)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from None
    n = sum(p.numel() for p in model.parameters())
    cfg = info.config["model"]
    click.echo(
        f"imported {info.weights_file}: Mask2Former Swin (embed {info.config['backbone']['settings']['embed_dim']}), "
        f"{cfg['num_classes']} classes, {cfg['num_queries']} queries, {cfg['enc_layers']} encoder / "
        f"{cfg['dec_layers']} decoder layers, {n / 1e6:.2f}M parameters"
    )
    click.echo(f"dropped {len(info.dropped)} HF keys on purpose; {len(info.initialised)} adaseg-only keys keep their "
               f"initial values (PAUMER auxiliary decoders, marked untrained: entropy pausing is refused until "
               f"`adaseg train-parent --recipe pause` trains them)")
    click.echo(f"wrote {out} (fingerprint {meta.fingerprint[:12]})")


def _import_timm(timm_file: str, name: str, out: str) -> None:
    import pickle

    from safetensors import SafetensorError

    from adaseg.models.backbones import CheckpointMismatchError, list_backbones
    from adaseg.models.hf.importer import BACKBONE_KIND, first_line, from_timm_backbone
    from adaseg.storage.checkpoint import CheckpointError, save_checkpoint

    if name not in list_backbones():
        raise click.BadParameter(f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())}",
                                 param_hint="'--model'")
    try:
        backbone, report = from_timm_backbone(timm_file, name=name)
    except (FileNotFoundError, CheckpointMismatchError) as exc:
        raise click.ClickException(str(exc)) from None
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        # the readers' own errors for a corrupt or foreign file
        raise click.ClickException(f"{timm_file}: not a readable checkpoint ({first_line(exc)})") from None
    extra = {"source": "timm", "source_path": os.path.abspath(timm_file), **report}
    try:
        meta = save_checkpoint(out, backbone.state_dict(), kind=BACKBONE_KIND, config={"name": name}, extra=extra)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from None
    n = sum(p.numel() for p in backbone.parameters())
    click.echo(f"imported {timm_file} into {name} ({n / 1e6:.2f}M parameters); dropped {len(report['dropped'])} keys, "
               f"{len(report['initialised'])} keys keep their initial values")
    click.echo(f"wrote {out} (fingerprint {meta.fingerprint[:12]})")

