"""A model checkpoint used where a parent is read, and a run directory made from one.

Any checkpoint that holds a whole model (:data:`adaseg.runs.parent.MODEL_KINDS`: a parent,
the shipped base, an ``adaseg import-weights --hf`` model) can be

* evaluated, swept and predicted directly: :class:`CheckpointRun` presents it as a run
  directory with no steps -- its parent is the file, its dataset is ``--data``, and what a
  command writes (``reports/``, ``sweeps/``, ``log.jsonl``, ``.lock``) goes to ``--out``,
  never next to the checkpoint or anywhere else the user did not name;
* made into a run directory (:func:`init_run`, ``adaseg init-run``) whose parent is that
  checkpoint, so Step B (derive), Step C (fit-gate), eval, sweep and predict run on it at once.

What a checkpoint cannot do yet is refused with one line naming the command that makes it
possible: entropy pausing while its auxiliary decoders are untrained (:func:`check_pause`),
a gate or a derived dataset of a checkpoint (:meth:`CheckpointRun.require`).

Categories travel with the checkpoint where it records them (``extra["categories"]``, written
by the import and by :func:`init_run`): :func:`recorded_meta` labels predictions without a
dataset on disk.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from adaseg.runs.run_dir import MissingStepError, RunDir, RunDirError, recreate_hint

UNTRAINED_AUX = "aux_decoders"
# config.json key recording where a run made by init-run came from
INIT_RUN_KEY = "init_run"


class UntrainedError(ValueError):
    """A setting needs a part of the model that was never trained; the message says what to run."""


def _header(path: str | os.PathLike):
    from adaseg.storage.checkpoint import read_checkpoint_meta

    return read_checkpoint_meta(path, hint=recreate_hint(path))


_INIT_CHAIN = 8  # parents trained from parents ...: how far back the --init chain is followed


def untrained_parts(kind: str, extra: dict[str, Any], _depth: int = 0) -> list[str]:
    """Parts of the model a checkpoint marks untrained (``extra["untrained"]``). Imported
    checkpoints written before the mark: their ``initialised`` keys (adaseg-only weights
    the import could not fill) are PAUMER's auxiliary decoders. A parent that train-parent
    made without pausing (``--recipe wsd`` or ``standard``) did not train its auxiliary
    decoders either: train-parent records the mark it inherits from its ``--init`` checkpoint;
    a parent written before it did is traced through its ``--init`` file, when that file is
    still there to read."""
    from adaseg.runs.parent import IMPORTED_NAMES, PARENT_KIND
    from adaseg.storage.checkpoint import CheckpointError

    if "untrained" in extra:
        return [str(p) for p in extra["untrained"]]
    if kind in IMPORTED_NAMES and extra.get("initialised"):
        return [UNTRAINED_AUX]
    recipe = str((extra.get("settings") or {}).get("recipe", ""))
    init = extra.get("init")
    if kind == PARENT_KIND and init and recipe and "pause" not in recipe and _depth < _INIT_CHAIN:
        if not Path(init).is_file():
            return []  # moved or deleted since: nothing to tell
        try:
            meta = _header(init)
        except CheckpointError:
            return []  # a damaged --init file says nothing about this parent's weights
        return [p for p in untrained_parts(meta.kind, meta.extra, _depth + 1) if p == UNTRAINED_AUX]
    return []


def check_pause(path: str | os.PathLike, pause, pause_mode: str) -> None:
    """Refuse entropy pausing on a checkpoint whose auxiliary decoders are untrained
    (:class:`UntrainedError`, one line saying what to run). Random pausing draws tokens without
    the auxiliary decoders and is allowed. Reads the file's header only."""
    if pause is None or pause_mode != "entropy":
        return
    meta = _header(path)
    check_pause_loaded({"kind": meta.kind, "extra": meta.extra}, pause, pause_mode, path)


def check_pause_loaded(info: dict, pause, pause_mode: str, path) -> None:
    """:func:`check_pause` on a loaded checkpoint's info (``load_parent``'s: ``kind``, ``extra``)."""
    from adaseg.runs.parent import IMPORTED_MODEL, IMPORTED_NAMES

    if pause is None or pause_mode != "entropy":
        return
    if UNTRAINED_AUX in untrained_parts(info.get("kind", ""), info["extra"]):
        model = IMPORTED_NAMES.get(info.get("kind", ""), info.get("model") or IMPORTED_MODEL)
        raise UntrainedError(
            f"{path}: its auxiliary decoders are untrained (imported without them), so entropy pausing would rank "
            f"tokens by noise: train them with `adaseg train-parent --model {model} --init {path} "
            f"--recipe wsd+pause --data SPEC --run R` (or use --pause-mode random)")




def recorded_meta(info: dict, *, task: str):
    """The categories a checkpoint records (``extra["categories"]``) as a
    :class:`~adaseg.data.meta.DatasetMeta` named after the checkpoint's source, or None when
    it records none (then a dataset must name them)."""
    from adaseg.data.meta import DatasetMeta
    from adaseg.runs.parent import DETR_KIND

    cats = info["extra"].get("categories")
    if not cats and info.get("kind") == DETR_KIND and info["extra"].get("class_names"):
        # a DETR imported before categories were recorded: every class has boxes, ids 0..K-1
        cats = [{"id": i, "name": str(n), "isthing": True} for i, n in enumerate(info["extra"]["class_names"])]
    if not cats:
        return None
    if task == "detection":
        from adaseg.runs.class_match import PLACEHOLDER, normalise

        # an 'N/A' slot of a head indexed by COCO category id is no class: its boxes are not
        # drawn or written (predict keeps the boxes of thing classes only)
        cats = [dict(c, isthing=False) if normalise(c["name"]) == PLACEHOLDER else c for c in cats]
    return DatasetMeta.from_categories_json(name=str(info["extra"].get("source", "checkpoint")),
                                            task="semantic" if task == "semantic" else "panoptic",
                                            categories=[dict(c) for c in cats])


def recorded_transform(info: dict):
    """The eval resize a checkpoint records (``extra["eval_transform"]``), else native size."""
    from adaseg.data.transforms import EvalTransform

    t = info["extra"].get("eval_transform") or {}
    return EvalTransform(short=t.get("short"), max_size=t.get("max_size"))


def check_data_fits(model, meta, *, spec: str, path) -> None:
    """Refuse (RunDirError, one line) a dataset whose classes are not the loaded checkpoint's
    ``model``'s: the number of classes and (for models that tell things from stuff) which
    contiguous ids are things (a detector: the data's things must be among its box classes).
    (Names are not compared: a transformers ``id2label`` and a dataset's JSON may spell one
    class differently.)

    A detection model whose checkpoint records its classes is first matched to the data's
    categories by name (:mod:`adaseg.runs.class_match`: the 91 COCO-id-indexed labels of
    facebook/detr-resnet-50 onto coco-det's 80): when they differ in count or order the model
    gets the class map (:meth:`~adaseg.models.detr.DETR.set_class_map`), so its detections are
    labelled in the data's classes; a missing or ambiguous match is refused."""
    if model.task == "detection" and hasattr(model, "set_class_map"):
        from adaseg.runs.class_match import checkpoint_class_map

        class_map = checkpoint_class_map(model, meta, spec=spec, path=path, extra=_header(path).extra)
        model.set_class_map(class_map)
        if class_map is not None:
            return  # every data category is one of the model's box classes (the match says so)
    n = int(model.num_classes)
    if meta.num_classes != n:
        raise RunDirError(f"--data {spec!r} has {meta.num_classes} categories; the checkpoint {path} predicts {n}")
    things = getattr(model, "thing_ids", None)
    if things is not None and model.task == "detection":
        # a detector's things are the classes it has boxes for: the data's boxes must be among them
        # (an imported DETR gives every class boxes; a panoptic set's stuff classes have none)
        missing = sorted(set(int(t) for t in meta.thing_ids) - set(int(t) for t in things))
        if missing:
            raise RunDirError(f"--data {spec!r} has boxes of classes {missing} the checkpoint {path} never predicts "
                              f"(its box classes: {sorted(int(t) for t in things)})")
        return
    if things is not None and sorted(meta.thing_ids) != sorted(int(t) for t in things):
        raise RunDirError(f"--data {spec!r} has thing classes {meta.thing_ids}; the checkpoint {path} has "
                          f"{sorted(int(t) for t in things)} "
                          "(import it again with --thing-ids matching the dataset)")


class CheckpointRun(RunDir):
    """A model checkpoint seen as a run directory with a parent and nothing else.

    Args:
        checkpoint: the checkpoint file (any kind in ``MODEL_KINDS``).
        data: the ``--data`` spec it is scored on (its "own" dataset here), or None.
        out: where the outputs go (``out/reports/``, ``out/sweeps/``, ``out/log.jsonl``);
            None: the command writes nothing (``root`` is then the checkpoint, for messages).
    """

    def __init__(self, checkpoint: str | os.PathLike, *, data: str | None, out: str | os.PathLike | None = None):
        super().__init__(out if out is not None else checkpoint)
        self.checkpoint = Path(checkpoint)
        self.data = data
        self.writes = out is not None

    def __repr__(self) -> str:
        return f"CheckpointRun({str(self.checkpoint)!r}, data={self.data!r}, out={str(self.root) if self.writes else None!r})"

    @property
    def label(self) -> str:
        """What plots and titles call it: the checkpoint's file stem."""
        return self.checkpoint.stem

    @property
    def parent_path(self) -> Path:
        return self.checkpoint

    def has(self, step: str) -> bool:
        if step == "config":
            return True
        if step == "parent":
            return self.checkpoint.is_file()
        if step in ("derived", "gate"):
            return False
        return super().has(step)

    def gate_files(self) -> list[Path]:
        return []

    def require(self, *steps: str) -> None:
        if "parent" in steps and not self.checkpoint.is_file():
            raise MissingStepError(f"{self.checkpoint}: no such checkpoint file")
        missing = [s for s in ("derived", "gate") if s in steps]
        if missing:
            what = {"derived": "derived dataset (Step B)", "gate": "gate"}[missing[0]]
            raise MissingStepError(
                f"{self.checkpoint} is a checkpoint, not a run: it has no {what}; make a run of it first: "
                f"`adaseg init-run --from {self.checkpoint} --data {self.data or 'SPEC'} --run R`, then "
                f"`adaseg derive --run R` and `adaseg fit-gate --run R --beta 0.0005`")

    def read_config(self) -> dict[str, Any]:
        if self.data is None:
            raise RunDirError(f"{self.checkpoint} is a checkpoint: give --data SPEC, the dataset to read")
        return {"data": self.data}


def run_label(run: RunDir) -> str:
    """A run's name for titles: its folder's name (a checkpoint's file stem), never a full path."""
    label = getattr(run, "label", None)
    return label if label else (Path(run.root).resolve().name or str(run.root))


def init_run(run: RunDir, checkpoint: str | os.PathLike, data: str) -> dict[str, Any]:
    """Make ``run`` a run directory whose parent is ``checkpoint``, scored on ``data``.

    Writes ``checkpoints/parent.safetensors`` (the checkpoint's tensors unchanged, so the same
    fingerprint, as a parent recording the registry name and options to rebuild it, its
    untrained parts and the dataset's categories) and then ``config.json`` (model, options,
    data, task, ``init``, a new run id). Every check comes first: a run that already holds a
    config, a parent or a training state, a checkpoint that is not a whole model, a dataset
    whose classes differ -- each refused with one line, nothing written. The caller holds the
    run's lock. Returns the config written.
    """
    from adaseg.runs.parent import PARENT_KIND, load_parent, parent_config
    from adaseg.runs.run_data import build_run_dataset
    from adaseg.storage.checkpoint import load_checkpoint, save_checkpoint

    for step, path in (("config", run.config_path), ("parent", run.parent_path), ("state", run.last_path)):
        if path.exists():
            raise RunDirError(f"{run.root} already holds a run ({path.relative_to(run.root)}): init-run makes a new run "
                              f"directory; choose another --run")
    source = Path(checkpoint)
    model, info = load_parent(source, device="cpu")  # verifies the bytes and that it is a whole model
    dataset, _ = build_run_dataset({"data": data}, None, "val")
    check_data_fits(model, dataset.meta, spec=data, path=source)
    # a model that cannot use the data's labels (a segmentation model on detection data, a
    # detection model on semantic data): one line (DataError), nothing written
    from adaseg.eval.tasks.registry import suite_for

    suite_for(model.task, dataset.meta.task)
    tensors, meta = load_checkpoint(source, hint=recreate_hint(source))
    task = model.task
    untrained = untrained_parts(meta.kind, meta.extra)
    origin = {"path": str(source.resolve()), "kind": meta.kind, "fingerprint": meta.fingerprint,
              "content_sha256": meta.content_hash}
    extra = {"task": task, "data": data, "init": str(source.resolve()), "iterations": 0, "depth": int(model.depth),
             "untrained": untrained, "categories": dataset.meta.categories_json(), INIT_RUN_KEY: origin}
    class_map = getattr(model, "class_map", None)
    if class_map is not None:
        # a detector whose classes were matched by name (check_data_fits): the parent keeps the
        # map (load_parent installs it, so derive / eval / predict label boxes in the data's
        # classes) and the model's own classes, from which a later match starts again
        from adaseg.runs.class_match import model_classes

        extra["class_map"] = [int(j) for j in class_map.tolist()]
        extra["model_categories"] = model_classes(meta.extra)
    save_checkpoint(run.parent_path, tensors, kind=PARENT_KIND, config=parent_config(info["model"], info["options"]),
                    extra=extra)
    config = {"model": info["model"], "model_options": info["options"], "data": data, "task": task,
              "init": str(source.resolve()), INIT_RUN_KEY: origin, "run_id": uuid.uuid4().hex}
    run.write_config(config)
    return config
