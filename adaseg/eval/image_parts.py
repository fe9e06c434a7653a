"""Per-image parts of an evaluation: the dataset-level figures of any multiset of its images.

An eval report keeps dataset-level figures (PQ, mIoU, AP, ...). Each of them is a function
of per-image sums, so :class:`ImageParts` keeps those sums for every evaluated image, and
:meth:`ImageParts.metrics` recomputes the report's figures on any list of image indices,
repeats allowed -- a bootstrap resample (:mod:`adaseg.eval.bootstrap`) -- without the model
or the data. Each evaluator of the report's suite (:mod:`adaseg.eval.tasks`) owns its part
and its figures:

* ``seg`` (N, C, 3) int64 per image and class ``[tp, fp, fn]`` pixels of the semantic
  inference (:mod:`adaseg.eval.tasks.semantic`);
* ``pq`` (N, C, 4) float64 per image and contiguous class ``[tp, fp, fn, iou_sum]``
  (:mod:`adaseg.eval.tasks.panoptic`; panoptic models on panoptic data);
* ``ap``: pycocotools' per-image matching (:mod:`adaseg.eval.tasks.instance`; likewise);

and every evaluation has ``exits`` (N,) the encoder layer each image left at and
``gflops_total`` / ``gflops_encoder`` (n_flops,) GFLOPs of the first ``n_flops`` images
(those the FLOP pass counted).

Saved as ``reports/eval_<name>.parts.safetensors`` beside the report (content hash written
and verified, :mod:`adaseg.storage.integrity`); the report records the file name and hash,
and :func:`load_parts` checks both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from adaseg.eval.tasks.base import Suite
from adaseg.eval.tasks.registry import EVALUATORS, suite_named

FORMAT_VERSION = "adaseg-eval-parts-v1"
COST_KEYS = ("gflops_encoder_mean", "gflops_total_mean", "exit_mean")


class PartsError(ValueError):
    """A report's per-image parts are missing, unreadable, corrupt or do not belong to it."""


class PartsMismatch(PartsError):
    """The report and its parts file are each intact, but do not go together: the file is
    missing, or its (valid) content hash is not the one the report records (a crash between
    the two writes, or another evaluation's parts under this name)."""


class ImageParts:
    """Per-image parts of N evaluated images (see the module docstring).

    Args:
        image_ids: (N,) the dataset's image ids in evaluation order (int64, or str for
            datasets with string ids).
        parent_fingerprint: the evaluated parent's fingerprint.
        metric: the name of the evaluation's suite (``"pq"``: panoptic model and data,
            ``"miou"``; :func:`adaseg.eval.tasks.registry.suite_named`).
        category_ids: (C,) int64 dataset category id of each contiguous class.
        isthing: (C,) bool.
        exits: (N,) int64.
        gflops_total, gflops_encoder: (n_flops,) float64 GFLOPs of images ``0..n_flops-1``.
        **parts: each evaluator's part by its ``part`` name (``seg=``, ``pq=``, ``ap=``),
            exactly the suite's; read back as attributes (``parts.seg``).
    """

    def __init__(self, *, image_ids: np.ndarray, parent_fingerprint: str, metric: str, category_ids: np.ndarray,
                 isthing: np.ndarray, exits: np.ndarray, gflops_total: np.ndarray, gflops_encoder: np.ndarray,
                 **parts: Any) -> None:
        self.image_ids = image_ids
        self.parent_fingerprint = parent_fingerprint
        self.metric = metric
        self.category_ids = category_ids
        self.isthing = isthing
        self.exits = exits
        self.gflops_total = gflops_total
        self.gflops_encoder = gflops_encoder
        try:
            self.suite: Suite = suite_named(metric)
        except ValueError as exc:
            raise ValueError(f"ImageParts: {exc}") from None
        given = {k: v for k, v in parts.items() if v is not None}
        names = [e.part for e in self.suite.evaluators]
        missing = [k for k in names if k not in given]
        if missing:
            raise ValueError(f"ImageParts: a {metric!r} evaluation needs {' and '.join(names)} parts "
                             f"({', '.join(missing)} missing)")
        extra = [k for k in given if k not in names]
        if extra:
            raise ValueError(f"ImageParts: a {metric!r} evaluation has no {' or '.join(extra)} parts")
        self.parts: dict[str, Any] = {k: given[k] for k in names}
        n, c = len(self.image_ids), len(self.category_ids)
        if n == 0:
            raise ValueError("ImageParts: no images")
        for name, arr, shape in (("isthing", self.isthing, (c,)), ("exits", self.exits, (n,)),
                                 ("gflops_encoder", self.gflops_encoder, self.gflops_total.shape)):
            if arr.shape != tuple(shape):
                raise ValueError(f"ImageParts: {name} has shape {arr.shape}, expected {tuple(shape)}")
        for e in self.suite.evaluators:
            e.check_part(self.parts[e.part], n, c)
        if self.gflops_total.ndim != 1 or not 0 < len(self.gflops_total) <= n:
            raise ValueError(f"ImageParts: {len(self.gflops_total)} FLOP counts for {n} images")
        # COCOeval pools images in sorted-id order; a resample is pooled in that order too
        # (stable for repeats), so the full set gives exactly the report's AP.
        self.id_rank = np.empty(n, dtype=np.int64)
        self.id_rank[np.argsort(self.image_ids, kind="stable")] = np.arange(n)
        self._cache: dict[str, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        # an evaluator's part by its name (parts.seg, parts.pq, parts.ap); None if the suite has none
        if name.startswith("_") or name in ("parts", "suite"):
            raise AttributeError(name)
        if any(e.part == name for e in EVALUATORS.values()):
            return self.parts.get(name)
        raise AttributeError(f"ImageParts has no attribute {name!r}")

    def replace(self, **changes: Any) -> "ImageParts":
        """A new ImageParts with ``changes`` (constructor keywords) applied, checked again."""
        fields = dict(image_ids=self.image_ids, parent_fingerprint=self.parent_fingerprint, metric=self.metric,
                      category_ids=self.category_ids, isthing=self.isthing, exits=self.exits,
                      gflops_total=self.gflops_total, gflops_encoder=self.gflops_encoder)
        if "metric" not in changes:
            fields.update(self.parts)
        return ImageParts(**{**fields, **changes})

    def cached(self, key: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        """``make()``, computed once per parts (for figures recomputed on many resamples)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # ------------------------------------------------------------------ facts
    @property
    def num_images(self) -> int:
        return int(len(self.image_ids))

    @property
    def n_flops(self) -> int:
        return int(len(self.gflops_total))

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The keys :meth:`metrics` returns: the report's figures, then the cost keys."""
        return (*self.suite.figure_names, *COST_KEYS)

    # ------------------------------------------------------------------ figures
    def metrics(self, indices: np.ndarray | None = None, *, keys: Iterable[str] | None = None
                ) -> dict[str, float | None]:
        """The dataset-level figures of the images ``indices`` ((L,) ints in 0..N-1, repeats
        allowed; None: all N in evaluation order), with the report's keys and units
        (fractions, GFLOPs): each evaluator's figures (PQ/SQ/RQ (All, _th, _st), mIoU,
        pixel_acc, AP/AP50/AP75, mean_image_PQ), and gflops_encoder_mean, gflops_total_mean
        (over the listed images that have FLOP counts, i.e. index < n_flops), exit_mean (over
        all listed images). None where a figure is undefined on these images, as in the report.

        ``keys``: compute only these (default :attr:`metric_names`); AP is the costly one.
        With ``indices=None`` the sums run in the report's order, so every figure equals the
        report's to the last bit (mean_image_PQ: to float rounding); with indices, images are
        weighted by their count (equal up to float rounding to summing the copies).
        """
        wanted = self.metric_names if keys is None else tuple(keys)
        unknown = [k for k in wanted if k not in self.metric_names]
        if unknown:
            raise KeyError(f"{unknown[0]!r} is not a figure of a {self.metric!r} evaluation; choose from "
                           f"{', '.join(self.metric_names)}")
        idx, weight = self._weights(indices)
        out: dict[str, float | None] = {}
        want = set(wanted)
        for e in self.suite.figure_order:
            out.update(e.figures_of(self.parts[e.part], self, idx, weight, want))
        if want & set(COST_KEYS):
            out.update(self._costs(idx))
        return {k: out[k] for k in wanted}

    def _weights(self, indices) -> tuple[np.ndarray | None, np.ndarray | None]:
        if indices is None:
            return None, None
        idx = np.asarray(indices)
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be a non-empty 1-D integer array, got shape {idx.shape} {idx.dtype}")
        if idx.min() < 0 or idx.max() >= self.num_images:
            raise ValueError(f"indices must lie in 0..{self.num_images - 1}")
        idx = idx.astype(np.int64, copy=False)
        return idx, np.bincount(idx, minlength=self.num_images)

    def _costs(self, idx: np.ndarray | None) -> dict[str, float | None]:
        if idx is None:
            counted = np.arange(self.n_flops)
            exits = self.exits
        else:
            counted = idx[idx < self.n_flops]
            exits = self.exits[idx]
        out: dict[str, float | None] = {}
        for key, values in (("gflops_encoder_mean", self.gflops_encoder), ("gflops_total_mean", self.gflops_total)):
            # torch's mean, as the report's FlopStats takes it
            out[key] = float(torch.from_numpy(values[counted]).mean()) if len(counted) else None
        out["exit_mean"] = float(exits.sum() / len(exits))
        return out

    # ------------------------------------------------------------------ file
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"category_ids": self.category_ids, "isthing": self.isthing, "exits": self.exits,
               "gflops_total": self.gflops_total, "gflops_encoder": self.gflops_encoder}
        for e in self.suite.evaluators:
            out.update(e.part_tensors(self.parts[e.part]))
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}

    def save(self, path: str | Path) -> str:
        """Write atomically to ``path`` (safetensors with a content hash); returns the hash."""
        from adaseg.storage.integrity import write_safetensors

        ids = [i.item() if isinstance(i, np.generic) else i for i in self.image_ids.tolist()]
        meta = {"format": FORMAT_VERSION, "metric": self.metric, "parent_fingerprint": self.parent_fingerprint,
                "image_ids": ids}
        return write_safetensors(path, self.tensors(), meta)


# ---------------------------------------------------------------------- building
def build_parts(per_image: list[dict], flop_counts: list, *, parent_fingerprint: str, metric: str,
                categories: list[dict], parts: dict[str, Any]) -> ImageParts:
    """:class:`ImageParts` from evaluation's per-image result rows (each with ``image_id`` and
    ``exit``), the FLOP counts of the first images (:class:`~adaseg.eval.flops.FlopCount` with
    an ``encoder`` scope), the dataset's ``categories`` in contiguous order and each
    evaluator's part by name."""
    return ImageParts(
        image_ids=np.asarray([r["image_id"] for r in per_image]),
        parent_fingerprint=parent_fingerprint,
        metric=metric,
        category_ids=np.asarray([int(cat["id"]) for cat in categories], dtype=np.int64),
        isthing=np.asarray([bool(cat.get("isthing", 0)) for cat in categories], dtype=bool),
        exits=np.asarray([int(r["exit"]) for r in per_image], dtype=np.int64),
        gflops_total=np.asarray([float(fc.total) for fc in flop_counts], dtype=np.float64) / 1e9,
        gflops_encoder=np.asarray([float(fc.scopes["encoder"]) for fc in flop_counts], dtype=np.float64) / 1e9,
        **parts,
    )


# ---------------------------------------------------------------------- reading
def parts_path_for(report_path: str | Path) -> Path:
    """``reports/eval_<name>.parts.safetensors`` beside ``reports/eval_<name>.json``."""
    report_path = Path(report_path)
    return report_path.with_name(report_path.stem + ".parts.safetensors")


def load_parts(report_json_path: str | Path, *, require_hash: bool = False) -> ImageParts:
    """The per-image parts of the eval report at ``report_json_path``, verified: the report
    matches its own content hash (``require_hash``: it must have one), the file it names
    exists beside it, its bytes match its content hash and that hash is the one the report
    recorded. Raises :class:`PartsError` with one line naming the file."""
    from adaseg.storage.integrity import IntegrityError, read_safetensors

    report_path = Path(report_json_path)
    report = read_report(report_path, require_hash=require_hash)
    record = report.get("parts")
    rerun = f"re-run `adaseg eval` with the settings in {report_path}"
    if not isinstance(record, dict) or not isinstance(record.get("file"), str) \
            or not isinstance(record.get("content_sha256"), str):
        raise PartsError(f"{report_path} records no per-image parts (written before they existed?): {rerun}")
    path = report_path.parent / Path(record["file"]).name
    if not path.is_file():
        raise PartsMismatch(f"{path}: the per-image parts of {report_path.name} are missing; {rerun}")
    try:
        read = read_safetensors(path, hint=rerun)
    except IntegrityError as exc:
        raise PartsError(str(exc)) from None
    meta = read.meta or {}
    if meta.get("format") != FORMAT_VERSION or read.content_hash is None:
        raise PartsError(f"{path} is not an adaseg per-image parts file ({FORMAT_VERSION}); {rerun}")
    if read.content_hash != record["content_sha256"]:
        raise PartsMismatch(f"{path} does not belong to {report_path.name} (content hash {read.content_hash[:12]}, the "
                         f"report records {record['content_sha256'][:12]}): {rerun}")
    t = {k: v.numpy() for k, v in read.tensors.items()}
    try:
        return ImageParts(
            image_ids=np.asarray(meta["image_ids"]), parent_fingerprint=str(meta["parent_fingerprint"]),
            metric=str(meta["metric"]), category_ids=t["category_ids"], isthing=t["isthing"], exits=t["exits"],
            gflops_total=t["gflops_total"], gflops_encoder=t["gflops_encoder"],
            **{e.part: e.part_from_tensors(t) for e in EVALUATORS.values()},  # a foreign part is refused
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PartsError(f"{path}: malformed per-image parts ({exc}); {rerun}") from None


def read_report(path: str | Path, *, require_hash: bool = False) -> dict[str, Any]:
    """An eval report's JSON, checked against its content hash when it records one
    (:func:`adaseg.storage.integrity.check_json`; ``require_hash``: a report without one,
    written before reports were hashed, is refused too); :class:`PartsError` naming ``path``
    when it is not an eval report or does not match its hash."""
    path = Path(path)
    if path.is_dir() or not path.exists():
        raise PartsError(f"{path}: no such eval report")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise PartsError(f"{path} is not an eval report (not JSON)") from None
    except OSError as exc:
        raise PartsError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict) or not all(k in data for k in ("settings", "metrics", "info")):
        raise PartsError(f"{path} is not an eval report (no settings / metrics / info)")
    from adaseg.storage.integrity import IntegrityError, check_json

    rerun = "re-run `adaseg eval` with the settings it names, or delete it"
    try:
        hashed = check_json(data, path=path, hint=rerun)
    except IntegrityError as exc:
        raise PartsError(str(exc)) from None
    if require_hash and not hashed:
        raise PartsError(f"{path} records no content hash (written by an older adaseg), so it cannot be trusted: "
                         f"{rerun}")
    return data
