"""The derived dataset of Step B: per image and exit, the quality and its parts; per image,
the gate's input features. Step C reads only this file, never the images.

One file ``derived.safetensors`` (+ ``derived.json``, a readable summary) holding:

* ``exits`` (E,) int64: the encoder layers the columns stand for (e.g. 2..6), increasing.
* ``quality`` (N, E) float64: per-image quality in [0, 1] (panoptic quality for panoptic
  models, mIoU for semantic ones), **NaN where undefined**. Undefined means the metric's
  denominator is zero: for PQ (panopticapi's definition, averaged over the classes with
  ``tp + fp + fn > 0``), no class has a ground-truth or a predicted segment, i.e. the
  ground truth is empty and so is that exit's prediction.
* ``parts_index`` (M, 3) int64 rows ``(image, exit column, class)`` and ``parts_values``
  (M, P) float64 with the per-class sums named by ``part_names`` (PQ: ``tp, fp, fn,
  iou_sum``; mIoU: ``intersection, union``), stored sparsely (only classes that occur in
  the image's ground truth or prediction) so COCO-sized sets stay small. Other utilities
  (SQ, RQ, PQ of things/stuff) are computed from them later.
* ``features`` (N, C) float32: the gate's input for each image (pooled lowest-resolution
  tokens), computed once by the parent.
* ``features_exit2`` (N, F) float32, optional: the exit-2 gate's input (the encoder's tokens
  after layer 2 pooled per level, ``fit-gate --features exit2``). Absent from files written
  before it existed and for parents that cannot provide it; then ``info["exit2_refusal"]``
  says why (:func:`exit2_features_or_refusal`).

The ``"adaseg"`` metadata entry holds ``metric``, ``part_names``, ``depth`` (the parent's
encoder depth), ``parent_fingerprint``, ``image_ids``, free-form ``info`` and the file's
content hash ``content_sha256`` (:mod:`adaseg.storage.integrity`), verified by :meth:`load`.
A file written before content hashes is read with a note that it could not be verified.
Every stored number must be finite except ``quality``'s NaN (undefined); :meth:`validate`
refuses the rest.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from adaseg.eval.tasks.registry import QUALITY
from adaseg.runs.run_dir import RunDir, RunDirError, recreate_hint
from adaseg.storage.atomic import atomic_write_json
from adaseg.storage.checkpoint import tensor_fingerprint
from adaseg.storage.integrity import (
    META_KEY,
    IntegrityError,
    UnreadableFile,
    read_safetensors,
    warn_once,
    write_safetensors,
)

FORMAT_VERSION = 1


class DerivedDatasetError(ValueError):
    """A derived dataset is malformed or cannot be read."""


@dataclass
class DerivedDataset:
    """Step B's output, in memory. See the module docstring for every field's meaning.

    Shapes: exits (E,), quality (N, E), features (N, C), parts_index (M, 3),
    parts_values (M, P), exit2_features (N, F) or None.
    """

    exits: torch.Tensor
    quality: torch.Tensor
    features: torch.Tensor
    metric: str
    depth: int
    parent_fingerprint: str
    image_ids: list[str]
    parts_index: torch.Tensor | None = None
    parts_values: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)
    content_hash: str | None = None  # of the file it was read from / written to
    exit2_features: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.exits = torch.as_tensor(self.exits, dtype=torch.long).reshape(-1)
        self.quality = torch.as_tensor(self.quality, dtype=torch.float64)
        self.features = torch.as_tensor(self.features, dtype=torch.float32)
        if self.exit2_features is not None:
            self.exit2_features = torch.as_tensor(self.exit2_features, dtype=torch.float32)
        self.validate()

    # ----------------------------------------------------------------------------------
    @property
    def num_images(self) -> int:
        return int(self.quality.shape[0])

    @property
    def exit_list(self) -> list[int]:
        return [int(e) for e in self.exits.tolist()]

    @property
    def part_names(self) -> tuple[str, ...]:
        return QUALITY[self.metric].part_names

    def validate(self) -> None:
        """Raise :class:`DerivedDatasetError` with one line naming what is wrong."""
        if self.metric not in QUALITY:
            raise DerivedDatasetError(f"metric must be one of {sorted(QUALITY)}, got {self.metric!r}")
        exits = self.exit_list
        if not exits:
            raise DerivedDatasetError("derived dataset has no exits")
        if exits != sorted(set(exits)) or exits[0] < 1 or exits[-1] > self.depth:
            raise DerivedDatasetError(f"exits must increase within 1..{self.depth} (the depth), got {exits}")
        if self.quality.dim() != 2 or self.quality.shape[1] != len(exits):
            raise DerivedDatasetError(
                f"quality must be (N, {len(exits)}) for exits {exits}, got {tuple(self.quality.shape)}"
            )
        n = self.num_images
        if self.features.dim() != 2 or self.features.shape[0] != n:
            raise DerivedDatasetError(f"features must be (N={n}, C), got {tuple(self.features.shape)}")
        if not torch.isfinite(self.features).all():
            raise DerivedDatasetError("features hold NaN or inf values")
        if self.exit2_features is not None:
            if self.exit2_features.dim() != 2 or self.exit2_features.shape[0] != n:
                raise DerivedDatasetError(f"features_exit2 must be (N={n}, F), got {tuple(self.exit2_features.shape)}")
            if not torch.isfinite(self.exit2_features).all():
                raise DerivedDatasetError("features_exit2 hold NaN or inf values")
        if torch.isinf(self.quality).any():
            raise DerivedDatasetError("quality holds inf values (NaN marks undefined; inf means nothing)")
        defined = self.quality[~torch.isnan(self.quality)]
        if defined.numel() and (defined.min() < 0 or defined.max() > 1):
            raise DerivedDatasetError(
                f"quality must lie in [0, 1] (NaN = undefined), got range "
                f"[{float(defined.min()):g}, {float(defined.max()):g}]"
            )
        if len(self.image_ids) != n:
            raise DerivedDatasetError(f"{len(self.image_ids)} image ids for {n} images")
        if (self.parts_index is None) != (self.parts_values is None):
            raise DerivedDatasetError("parts_index and parts_values must be given together")
        if self.parts_index is not None:
            self.parts_index = torch.as_tensor(self.parts_index, dtype=torch.long)
            self.parts_values = torch.as_tensor(self.parts_values, dtype=torch.float64)
            m = self.parts_index.shape[0]
            if self.parts_index.shape != (m, 3) or self.parts_values.shape != (m, len(self.part_names)):
                raise DerivedDatasetError(
                    f"parts must be (M, 3) and (M, {len(self.part_names)}) for {self.part_names}, got "
                    f"{tuple(self.parts_index.shape)} and {tuple(self.parts_values.shape)}"
                )
            if not torch.isfinite(self.parts_values).all():
                raise DerivedDatasetError("parts_values hold NaN or inf values (only quality may be NaN: undefined)")
            if m and (
                self.parts_index[:, 0].min() < 0 or self.parts_index[:, 0].max() >= n
                or self.parts_index[:, 1].min() < 0 or self.parts_index[:, 1].max() >= len(exits)
                or self.parts_index[:, 2].min() < 0
            ):
                raise DerivedDatasetError("parts_index rows (image, exit column, class) are out of range")

    def fingerprint(self) -> str:
        """SHA-256 of the quality and features (identifies the training data of a gate)."""
        return tensor_fingerprint({"quality": self.quality, "features": self.features, "exits": self.exits})

    # ----------------------------------------------------------------------------------
    def quality_from_parts(self, utility: str = "pq") -> torch.Tensor:
        """(N, E) per-image utility recomputed from the stored parts by the metric's evaluator
        (:mod:`adaseg.eval.tasks`); NaN where undefined.

        PQ parts: ``pq`` = mean over classes with tp+fp+fn > 0 of iou_sum / (tp + fp/2 + fn/2);
        ``sq`` = mean of iou_sum / tp over classes with tp > 0; ``rq`` = mean of
        tp / (tp + fp/2 + fn/2) over classes with tp+fp+fn > 0. mIoU parts: ``miou`` = mean of
        intersection / union over classes with union > 0.
        """
        if self.parts_index is None:
            raise DerivedDatasetError("this derived dataset stores no per-class parts")
        n, e = self.quality.shape
        try:
            return QUALITY[self.metric].quality_from_parts(self.parts_index, self.parts_values, n, e, utility)
        except ValueError as exc:
            raise DerivedDatasetError(str(exc)) from None

    # ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to ``path`` (``.safetensors``) plus a readable ``.json`` summary."""
        path = Path(path)
        self.validate()
        tensors = {"exits": self.exits, "quality": self.quality, "features": self.features}
        if self.parts_index is not None:
            tensors["parts_index"] = self.parts_index
            tensors["parts_values"] = self.parts_values
        if self.exit2_features is not None:
            tensors["features_exit2"] = self.exit2_features
        meta = {
            "format": FORMAT_VERSION,
            "metric": self.metric,
            "part_names": list(self.part_names),
            "depth": self.depth,
            "parent_fingerprint": self.parent_fingerprint,
            "image_ids": [str(i) for i in self.image_ids],
            "info": self.info,
        }
        self.content_hash = write_safetensors(path, tensors, meta)
        atomic_write_json(path.with_suffix(".json"), self.summary())
        return path

    def summary(self) -> dict[str, Any]:
        """Readable facts: sizes, exits, mean quality per exit, undefined counts, best-exit histogram."""
        q = self.quality
        undefined = torch.isnan(q)
        mean = [None if torch.isnan(c).all() else float(c[~torch.isnan(c)].mean()) for c in q.T]
        best = best_exit_histogram(self)
        return {
            "num_images": self.num_images,
            "exits": self.exit_list,
            "depth": self.depth,
            "metric": self.metric,
            "feature_dim": int(self.features.shape[1]),
            "parent_fingerprint": self.parent_fingerprint,
            "mean_quality_per_exit": mean,
            "undefined_per_exit": [int(c) for c in undefined.sum(0).tolist()],
            "undefined_all_exits": int(undefined.all(1).sum()),
            "best_exit_histogram": best,
            "info": self.info,
            "content_sha256": self.content_hash,
        }

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DerivedDataset":
        """Read ``path``; raise :class:`DerivedDatasetError` with one line if it is unusable."""
        path = Path(path)
        hint = recreate_hint(path)
        if not path.exists():
            raise DerivedDatasetError(f"derived dataset {path} does not exist")
        try:
            read = read_safetensors(path, hint=hint)
        except UnreadableFile as exc:
            raise DerivedDatasetError(f"derived dataset {path} is not readable ({exc.detail}); {hint}") from None
        except IntegrityError as exc:
            raise DerivedDatasetError(f"derived dataset {exc}") from None
        meta, tensors = read.meta, read.tensors
        if meta is None:
            raise DerivedDatasetError(f"derived dataset {path} has no '{META_KEY}' metadata")
        if "kind" in meta:
            raise DerivedDatasetError(f"{path} is a {meta['kind']!r} checkpoint, not a derived dataset")
        if meta.get("format") != FORMAT_VERSION:
            raise DerivedDatasetError(f"derived dataset {path} has format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        if read.content_hash is None:
            warn_once(str(path), f"{path} predates content hashes and cannot be verified; {hint} to add one")
        missing = [k for k in ("exits", "quality", "features") if k not in tensors]
        if missing:
            raise DerivedDatasetError(f"derived dataset {path} lacks tensors {missing}")
        try:
            return cls(
                exits=tensors["exits"],
                quality=tensors["quality"],
                features=tensors["features"],
                metric=meta["metric"],
                depth=int(meta["depth"]),
                parent_fingerprint=meta["parent_fingerprint"],
                image_ids=list(meta["image_ids"]),
                parts_index=tensors.get("parts_index"),
                parts_values=tensors.get("parts_values"),
                info=meta.get("info", {}),
                content_hash=read.content_hash,
                exit2_features=tensors.get("features_exit2"),
            )
        except DerivedDatasetError as exc:
            raise DerivedDatasetError(f"derived dataset {path}: {exc}; {hint}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise DerivedDatasetError(f"derived dataset {path}: its metadata is malformed ({exc!r}); {hint}") from None


def gate_inputs(derived: DerivedDataset, features: str, *, run_hint: str) -> torch.Tensor:
    """(N, F) the gate input ``features`` (``"backbone"`` or ``"exit2"``) of ``derived``, or
    :class:`DerivedDatasetError` with one line: exit-2 features that the parent cannot provide
    (the reason derive recorded), or that a derived file written before them lacks (derive
    again: ``run_hint`` is the command)."""
    if features == "backbone":
        return derived.features
    if features != "exit2":
        raise DerivedDatasetError(f"gate features must be backbone or exit2, got {features!r}")
    if derived.exit2_features is not None:
        return derived.exit2_features
    refusal = derived.info.get("exit2_refusal")
    if refusal:
        raise DerivedDatasetError(f"--features exit2: gates fitted on features the parent cannot provide are "
                                  f"refused: {refusal}")
    raise DerivedDatasetError(f"--features exit2: this derived dataset predates exit-2 features: run `{run_hint}` "
                              "again")


def best_exit_histogram(derived: DerivedDataset) -> dict[str, int]:
    """Images per best exit (the paper's Fig. 2): ties go to the earliest exit; images with
    undefined quality at every exit are counted under ``"undefined"``."""
    q = derived.quality
    all_nan = torch.isnan(q).all(1)
    filled = torch.where(torch.isnan(q), torch.full_like(q, -math.inf), q)
    best = filled.argmax(1)  # argmax returns the first maximum: earliest exit on ties
    hist = {str(e): int(((best == j) & ~all_nan).sum()) for j, e in enumerate(derived.exit_list)}
    hist["undefined"] = int(all_nan.sum())
    return hist


def stack_parts(
    rows: Sequence[tuple[int, int, int, Sequence[float]]], num_parts: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn ``(image, exit column, class, values)`` rows into ``(parts_index, parts_values)``."""
    if not rows:
        return torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, num_parts, dtype=torch.float64)
    index = torch.tensor([[r[0], r[1], r[2]] for r in rows], dtype=torch.long)
    values = torch.tensor([list(r[3]) for r in rows], dtype=torch.float64)
    return index, values


def load_run_derived(run: RunDir, *, check_parent: bool = True) -> DerivedDataset:
    """``run``'s derived dataset; with ``check_parent`` it must come from ``run``'s parent
    (else :class:`~adaseg.runs.run_dir.RunDirError` says to derive again); the parent's file
    is then verified whole (:func:`adaseg.runs.parent.verified_parent_fingerprint`: a parent
    damaged since derive is a CheckpointError naming it, not a match by its header)."""
    from adaseg.runs.parent import verified_parent_fingerprint

    run.require(*(("parent", "derived") if check_parent else ("derived",)))
    derived = DerivedDataset.load(run.derived_path)
    if check_parent:
        fp = verified_parent_fingerprint(run)
        if derived.parent_fingerprint != fp:
            raise RunDirError(
                f"{run.derived_path} was derived from parent {derived.parent_fingerprint[:12]}, but "
                f"{run.parent_path} is {fp[:12]}: run `adaseg derive --run {run.root}` again"
            )
    return derived


VAL_DERIVED_NAME = "derived_val.safetensors"


def val_derived_path(run: RunDir) -> Path:
    """Where ``adaseg derive --split val`` writes Step B on the **val** images: beside
    ``derived.safetensors``, under another name, so that fit-gate (which reads only
    :attr:`RunDir.derived_path`) can never train on it. Only the oracle gate reads it."""
    return run.root / VAL_DERIVED_NAME


def load_val_derived(run: RunDir) -> DerivedDataset:
    """``run``'s val-split Step B (:func:`val_derived_path`), from ``run``'s parent (the
    parent file verified whole); :class:`~adaseg.runs.run_dir.RunDirError` with the command
    to run when it is missing or from another parent."""
    from adaseg.runs.parent import verified_parent_fingerprint

    run.require("parent")
    path = val_derived_path(run)
    hint = f"run `adaseg derive --split val --run {run.root}`"
    if not path.is_file():
        raise RunDirError(f"{run.root} has no Step B on the val images ({path.name}): {hint} first")
    try:
        derived = DerivedDataset.load(path)
    except DerivedDatasetError as exc:
        raise DerivedDatasetError(f"{exc} ({hint} again)") from None
    if derived.info.get("split") != "val":
        raise RunDirError(f"{path} records split {derived.info.get('split')!r}, not 'val': {hint} again")
    fp = verified_parent_fingerprint(run)
    if derived.parent_fingerprint != fp:
        raise RunDirError(f"{path} was derived from parent {derived.parent_fingerprint[:12]}, but "
                          f"{run.parent_path} is {fp[:12]}: {hint} again")
    return derived
