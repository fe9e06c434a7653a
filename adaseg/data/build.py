"""``--data`` specs -> datasets with their default transforms.

Specs: ``synthetic`` (default; the built-in set, generated on first use into the cache),
``coco:ROOT``, ``cityscapes:ROOT``, ``ade20k:ROOT``, or a plain path to a COCO-panoptic
folder (layout in :mod:`adaseg.data.coco_panoptic`; ``adaseg data synth --out DIR`` writes one).
``coco-det:ROOT`` is COCO *detection* (an instances JSON + images, layout in
:mod:`adaseg.data.coco_detection`): a :class:`~adaseg.data.detection_dataset.DetectionDataset`
of boxes with the box versions of the same transforms (:mod:`adaseg.data.box_transforms`);
a folder written by ``adaseg data synth`` is one too (``coco-det:DIR``, its thing segments
as boxes).

Default transforms (train = large-scale jitter + crop + flip; eval = resize):

=============  ======================  ==============  ===========  ==========================
dataset        train fit box (h, w)     crop (h, w)     scale range  eval
=============  ======================  ==============  ===========  ==========================
synthetic      (128, 128) = native      (128, 128)      0.5 - 1.5    native resolution
coco / folder  (1024, 1024)            (1024, 1024)    0.1 - 2.0    shorter side 800, max 1333
coco-det       as coco (a synth folder: as synthetic)
cityscapes     (1024, 2048)            (512, 1024)     0.5 - 2.0    native (1024 x 2048)
ade20k         (512, 2048)             (512, 512)      0.5 - 2.0    shorter side 512, max 2048
=============  ======================  ==============  ===========  ==========================

The synthetic range is narrower than COCO's 0.1 - 2.0 because its hard images already hold
objects of a few pixels; shrinking them further erases them, and a 2x zoom crops away the
context hard images need. A folder written by ``adaseg data synth`` (it holds
``synthetic.json``) gets the synthetic defaults at its own image size.
"""

from __future__ import annotations

import json
import os

from adaseg.data.ade20k import load_ade20k_split
from adaseg.data.box_transforms import BoxEvalTransform, BoxTrainTransform
from adaseg.data.coco_detection import detection_layout, load_detection_split
from adaseg.data.cityscapes import load_cityscapes_split
from adaseg.data.coco_panoptic import PanopticLayout, load_panoptic_split
from adaseg.data.dataset import SegmentationDataset
from adaseg.data.detection_dataset import DetectionDataset
from adaseg.data.panoptic_io import DataError
from adaseg.data.transforms import EvalTransform, TrainTransform
from adaseg.choices import SPLITS
_SYNTH_KEYS = ("n_train", "n_val", "size", "seed")


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``spec`` -> (kind, root): kind in synthetic / coco / coco-det / cityscapes / ade20k / folder."""
    if spec == "synthetic":
        return "synthetic", None
    for kind in ("coco", "coco-det", "cityscapes", "ade20k"):
        if spec.startswith(kind + ":"):
            root = spec[len(kind) + 1:]
            if not root:
                raise DataError(f"--data {spec!r}: missing ROOT after '{kind}:'")
            return kind, root
    if os.path.isdir(spec):
        return "folder", spec
    raise DataError(f"--data {spec!r}: not 'synthetic', 'coco:ROOT', 'coco-det:ROOT', 'cityscapes:ROOT', "
                    "'ade20k:ROOT' or an existing COCO-panoptic folder")


def build_dataset(spec: str = "synthetic", split: str = "train", *, train: bool = False, size: int | None = None,
                  scale_range: tuple[float, float] | None = None, synthetic: dict | None = None
                  ) -> SegmentationDataset:
    """The dataset named by ``spec`` (see module docstring) for ``split`` ('train' or 'val').

    Args:
        train: apply training transforms (jitter, crop, flip) instead of eval resizing.
        size: train: crop and fit box become (size, size); eval: resize the shorter side to
            ``size`` (no cap). None keeps the dataset's defaults.
        scale_range: override the train jitter range (min, max).
        synthetic: arguments of the built-in set (n_train, n_val, size, seed); only with
            ``spec='synthetic'``.

    Returns a :class:`SegmentationDataset` whose ``meta`` is a :class:`DatasetMeta`
    (``coco-det``: its subclass :class:`DetectionDataset`, ``meta.task == 'detection'``).
    Raises DataError (one line naming the file or value) for unusable input.
    """
    if split not in SPLITS:
        raise DataError(f"split {split!r}: use one of {', '.join(SPLITS)}")
    if size is not None and size < 1:
        raise DataError(f"size {size}: must be a positive number of pixels")
    kind, root = parse_spec(spec)
    if synthetic and kind != "synthetic":
        raise DataError(f"--data {spec!r}: synthetic options {sorted(synthetic)} only apply to 'synthetic'")
    if kind == "synthetic":
        from adaseg.data.synthetic.cache import synthetic_root

        unknown = set(synthetic or {}) - set(_SYNTH_KEYS)
        if unknown:
            raise DataError(f"synthetic options {sorted(unknown)}: unknown (use {', '.join(_SYNTH_KEYS)})")
        root = synthetic_root(**(synthetic or {}))
        kind, name = "folder", "synthetic"
    else:
        name = _folder_name(root) if kind == "folder" else kind
    assert root is not None
    if kind == "folder":
        meta, records, _ = load_panoptic_split(PanopticLayout(root, split), name=name)
        synth_size = _synthetic_size(root)
        defaults = _synthetic_defaults(synth_size) if synth_size else _COCO
    elif kind == "coco":
        meta, records, _ = load_panoptic_split(PanopticLayout(root, split + "2017"), name="coco")
        defaults = _COCO
    elif kind == "coco-det":
        layout = detection_layout(root, split)
        name = "coco" if layout.split.endswith("2017") else _folder_name(root)
        meta, records, _ = load_detection_split(layout, name=name)
        synth_size = _synthetic_size(root)
        defaults = _synthetic_defaults(synth_size) if synth_size else _COCO
        transform = _transform(defaults, train=train, size=size, scale_range=scale_range, boxes=True)
        return DetectionDataset(meta=meta, records=records, transform=transform, source=spec)
    elif kind == "cityscapes":
        meta, records = load_cityscapes_split(root, split)
        defaults = _CITYSCAPES
    else:
        meta, records = load_ade20k_split(root, split)
        defaults = _ADE20K
    transform = _transform(defaults, train=train, size=size, scale_range=scale_range)
    return SegmentationDataset(meta=meta, records=records, transform=transform, source=spec)


def panoptic_gt_paths(spec: str, split: str) -> tuple[str, str]:
    """(panoptic JSON, PNG folder) of ``spec``'s ``split`` — what ``adaseg score`` compares
    prediction files against. DataError for semantic-only datasets (ADE20K)."""
    if split not in SPLITS:
        raise DataError(f"split {split!r}: use one of {', '.join(SPLITS)}")
    kind, root = parse_spec(spec)
    if kind == "synthetic":
        from adaseg.data.synthetic.cache import synthetic_root

        kind, root = "folder", synthetic_root()
    if kind == "coco-det":
        raise DataError(f"--data {spec!r}: COCO detection data (boxes) has no panoptic ground truth files")
    if kind in ("folder", "coco"):
        layout = PanopticLayout(root, split if kind == "folder" else split + "2017")
        return layout.json_path, layout.png_dir
    if kind == "cityscapes":
        gt = os.path.join(root, "gtFine")
        for suffix in ("", "_trainId"):
            path = os.path.join(gt, f"cityscapes_panoptic_{split}{suffix}.json")
            if os.path.isfile(path):
                return path, path[: -len(".json")]
        raise DataError(f"{os.path.join(gt, f'cityscapes_panoptic_{split}.json')}: Cityscapes panoptic JSON not found")
    raise DataError(f"--data {spec!r}: ADE20K is semantic only; it has no panoptic ground truth files")


_COCO = {"target": (1024, 1024), "crop": (1024, 1024), "scale": (0.1, 2.0), "eval": (800, 1333)}
_CITYSCAPES = {"target": (1024, 2048), "crop": (512, 1024), "scale": (0.5, 2.0), "eval": (None, None)}
_ADE20K = {"target": (512, 2048), "crop": (512, 512), "scale": (0.5, 2.0), "eval": (512, 2048)}


def _synthetic_defaults(s: int) -> dict:
    return {"target": (s, s), "crop": (s, s), "scale": (0.5, 1.5), "eval": (None, None)}


def _transform(defaults: dict, *, train: bool, size: int | None, scale_range, boxes: bool = False):
    train_cls, eval_cls = (BoxTrainTransform, BoxEvalTransform) if boxes else (TrainTransform, EvalTransform)
    if train:
        target, crop = defaults["target"], defaults["crop"]
        if size is not None:
            target = crop = (size, size)
        lo, hi = scale_range if scale_range is not None else defaults["scale"]
        return train_cls(target=target, crop=crop, min_scale=lo, max_scale=hi)
    if scale_range is not None:
        raise DataError("scale_range only applies with train=True")
    short, max_size = defaults["eval"]
    if size is not None:
        short, max_size = size, None
    return eval_cls(short=short, max_size=max_size)


def _folder_name(root: str) -> str:
    return os.path.basename(os.path.normpath(root)) or "folder"


def _synthetic_size(root: str) -> int | None:
    """Image size of a folder written by the synthetic generator, else None."""
    path = os.path.join(root, "synthetic.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return int(json.load(f)["size"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: malformed synthetic.json ({exc})") from None
