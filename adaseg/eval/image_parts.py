"""Per-image parts of an evaluation: the dataset-level figures of any multiset of its images.

An eval report keeps dataset-level figures (PQ, mIoU, AP, ...). Each of them is a function
of per-image sums, so :class:`ImageParts` keeps those sums for every evaluated image, and
:meth:`ImageParts.metrics` recomputes the report's figures on any list of image indices,
repeats allowed -- a bootstrap resample (:mod:`adaseg.eval.bootstrap`) -- without the model
or the data:

* ``pq`` (N, C, 4) float64 per image and contiguous class ``[tp, fp, fn, iou_sum]``
  (panopticapi's matching, :func:`adaseg.eval.pq.pq_image`; panoptic models only);
* ``seg`` (N, C, 3) int64 per image and class ``[tp, fp, fn]`` pixels of Mask2Former's
  semantic inference (what mIoU and pixel accuracy need of the image's confusion matrix;
  ``fn`` includes pixels predicted as ignore);
* ``ap``: pycocotools' per-image matching (:class:`adaseg.eval.ap_matches.ApMatches`;
  panoptic models only);
* ``exits`` (N,) the encoder layer each image left at; ``gflops_total`` / ``gflops_encoder``
  (n_flops,) GFLOPs of the first ``n_flops`` images (those the FLOP pass counted).

Saved as ``reports/eval_<name>.parts.safetensors`` beside the report (content hash written
and verified, :mod:`adaseg.storage.integrity`); the report records the file name and hash,
and :func:`load_parts` checks both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from adaseg.eval.ap_matches import ApMatches

FORMAT_VERSION = "adaseg-eval-parts-v1"
PQ_KEYS = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")
SEG_KEYS = ("mIoU", "pixel_acc")
AP_KEYS = ("AP", "AP50", "AP75")
COST_KEYS = ("gflops_encoder_mean", "gflops_total_mean", "exit_mean")
_AP_FIELDS = ("category_ids", "gt_count", "det_image", "det_category", "det_score", "det_tp", "det_fp")


class PartsError(ValueError):
    """A report's per-image parts are missing, unreadable, corrupt or do not belong to it."""


@dataclass
class ImageParts:
    """Per-image parts of N evaluated images (see the module docstring).

    Attributes:
        image_ids: (N,) the dataset's image ids in evaluation order (int64, or str for
            datasets with string ids).
        parent_fingerprint: the evaluated parent's fingerprint.
        metric: ``"pq"`` (panoptic model and data) or ``"miou"``.
        category_ids: (C,) int64 dataset category id of each contiguous class.
        isthing: (C,) bool.
        seg: (N, C, 3) int64 ``[tp, fp, fn]`` pixels.
        exits: (N,) int64.
        gflops_total, gflops_encoder: (n_flops,) float64 GFLOPs of images ``0..n_flops-1``.
        pq: (N, C, 4) float64 ``[tp, fp, fn, iou_sum]`` or None (``metric == "miou"``).
        ap: the AP matching or None (``metric == "miou"``).
    """

    image_ids: np.ndarray
    parent_fingerprint: str
    metric: str
    category_ids: np.ndarray
    isthing: np.ndarray
    seg: np.ndarray
    exits: np.ndarray
    gflops_total: np.ndarray
    gflops_encoder: np.ndarray
    pq: np.ndarray | None = None
    ap: ApMatches | None = None

    def __post_init__(self) -> None:
        n, c = len(self.image_ids), len(self.category_ids)
        if self.metric not in ("pq", "miou"):
            raise ValueError(f"ImageParts: metric must be 'pq' or 'miou', got {self.metric!r}")
        if n == 0:
            raise ValueError("ImageParts: no images")
        checks = [("isthing", self.isthing, (c,)), ("seg", self.seg, (n, c, 3)), ("exits", self.exits, (n,)),
                  ("gflops_encoder", self.gflops_encoder, self.gflops_total.shape)]
        if self.metric == "pq":
            if self.pq is None or self.ap is None:
                raise ValueError("ImageParts: a 'pq' evaluation needs pq and ap parts")
            checks.append(("pq", self.pq, (n, c, 4)))
            if self.ap.num_images != n:
                raise ValueError(f"ImageParts: AP matching of {self.ap.num_images} images, expected {n}")
        elif self.pq is not None or self.ap is not None:
            raise ValueError("ImageParts: a 'miou' evaluation has no pq or ap parts")
        for name, arr, shape in checks:
            if arr.shape != tuple(shape):
                raise ValueError(f"ImageParts: {name} has shape {arr.shape}, expected {tuple(shape)}")
        if self.gflops_total.ndim != 1 or not 0 < len(self.gflops_total) <= n:
            raise ValueError(f"ImageParts: {len(self.gflops_total)} FLOP counts for {n} images")
        # COCOeval pools images in sorted-id order; a resample is pooled in that order too
        # (stable for repeats), so the full set gives exactly the report's AP.
        self._id_rank = np.empty(n, dtype=np.int64)
        self._id_rank[np.argsort(self.image_ids, kind="stable")] = np.arange(n)
        self._cache: dict[str, np.ndarray | None] = {}

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
        quality = (*PQ_KEYS, *SEG_KEYS, *AP_KEYS, "mean_image_PQ") if self.metric == "pq" else SEG_KEYS
        return (*quality, *COST_KEYS)

    # ------------------------------------------------------------------ figures
    def metrics(self, indices: np.ndarray | None = None, *, keys: Iterable[str] | None = None
                ) -> dict[str, float | None]:
        """The dataset-level figures of the images ``indices`` ((L,) ints in 0..N-1, repeats
        allowed; None: all N in evaluation order), with the report's keys and units
        (fractions, GFLOPs): PQ/SQ/RQ (All, _th, _st), mIoU, pixel_acc, AP/AP50/AP75,
        mean_image_PQ (panoptic), and gflops_encoder_mean, gflops_total_mean (over the listed
        images that have FLOP counts, i.e. index < n_flops), exit_mean (over all listed
        images). None where a figure is undefined on these images, as in the report.

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
        if want & set(SEG_KEYS):
            if weight is None:
                seg = self.seg.sum(axis=0)
            else:  # float64 (BLAS) holds these integer counts exactly: far below 2**53
                seg = np.rint(self._sum(self._seg_float(), weight)).astype(np.int64)
            out.update(_seg_figures(seg))
        if want & set(PQ_KEYS):
            out.update(_pq_figures(self._sum(self.pq, weight), self.isthing))
        if want & set(AP_KEYS):
            ones = np.ones(self.num_images, dtype=np.int64)
            out.update(self.ap.accumulate(ones if weight is None else weight, self._id_rank))
        if "mean_image_PQ" in want:
            out["mean_image_PQ"] = self._mean_image_pq(idx)
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

    @staticmethod
    def _sum(arr: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
        if weight is None:
            return arr.sum(axis=0)  # over images one after another: the report's order
        return (weight.astype(np.float64) @ arr.reshape(len(arr), -1)).reshape(arr.shape[1:])

    def _seg_float(self) -> np.ndarray:
        if self._cache.get("seg") is None:
            self._cache["seg"] = self.seg.astype(np.float64)
        return self._cache["seg"]

    def _mean_image_pq(self, idx: np.ndarray | None) -> float | None:
        if self._cache.get("image_pq") is None:
            self._cache["image_pq"] = _per_image_pq(self.pq)
        per_image = self._cache["image_pq"]
        vals = per_image if idx is None else per_image[idx]
        vals = vals[~np.isnan(vals)]
        return float(np.cumsum(vals)[-1] / len(vals)) if len(vals) else None

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
        out = {"category_ids": self.category_ids, "isthing": self.isthing, "seg": self.seg, "exits": self.exits,
               "gflops_total": self.gflops_total, "gflops_encoder": self.gflops_encoder}
        if self.pq is not None:
            out["pq"] = self.pq
        if self.ap is not None:
            out.update({f"ap_{f}": getattr(self.ap, f) for f in _AP_FIELDS})
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}

    def save(self, path: str | Path) -> str:
        """Write atomically to ``path`` (safetensors with a content hash); returns the hash."""
        from adaseg.storage.integrity import write_safetensors

        ids = [i.item() if isinstance(i, np.generic) else i for i in self.image_ids.tolist()]
        meta = {"format": FORMAT_VERSION, "metric": self.metric, "parent_fingerprint": self.parent_fingerprint,
                "image_ids": ids}
        return write_safetensors(path, self.tensors(), meta)


def _seg_figures(sums: np.ndarray) -> dict[str, float | None]:
    # the arithmetic of ConfusionMatrix.iou / results, so the full set is bit-identical
    tp, fp, fn = (sums[:, j] for j in range(3))
    tp_f = tp.astype(np.float64)
    denom = tp_f + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp_f / np.maximum(denom, 1), np.nan)
    valid = ~np.isnan(iou)
    total = int((tp + fn).sum())
    return {"mIoU": float(iou[valid].mean()) if valid.any() else None,
            "pixel_acc": float(tp.sum() / total) if total else None}


def _pq_figures(sums: np.ndarray, isthing: np.ndarray) -> dict[str, float | None]:
    # panopticapi's pq_average (PQStats.average): classes with tp + fp + fn > 0, summed in
    # category order (cumsum: one addition after another, as the report does)
    tp, fp, fn, iou = (sums[:, j] for j in range(4))
    valid = tp + fp + fn > 0
    denom = tp + 0.5 * fp + 0.5 * fn
    with np.errstate(invalid="ignore", divide="ignore"):
        pq_c = iou / denom
        sq_c = np.where(tp != 0, iou / tp, 0.0)
        rq_c = tp / denom
    out: dict[str, float | None] = {}
    for suffix, group in (("", np.ones_like(valid)), ("_th", isthing), ("_st", ~isthing)):
        sel = valid & group
        n = int(sel.sum())
        for key, per_class in (("PQ", pq_c), ("SQ", sq_c), ("RQ", rq_c)):
            out[key + suffix] = float(np.cumsum(per_class[sel])[-1] / n) if n else None
    return out


def _per_image_pq(pq: np.ndarray) -> np.ndarray:
    """(N,) each image's PQ over its classes with tp + fp + fn > 0; NaN when it has none."""
    tp, fp, fn, iou = (pq[..., j] for j in range(4))
    valid = tp + fp + fn > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(valid, iou / (tp + 0.5 * fp + 0.5 * fn), 0.0)
    n = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, per_class.sum(axis=1) / np.maximum(n, 1), np.nan)


# ---------------------------------------------------------------------- building
def parts_from_results(per_image: list[dict], flop_counts: list, *, image_ids: list, parent_fingerprint: str,
                       metric: str, categories: list[dict], ap_matches: ApMatches | None) -> ImageParts:
    """:class:`ImageParts` from evaluation's per-image results (each with ``exit``, ``cm`` (a
    :class:`~adaseg.eval.miou.ConfusionMatrix`) and, for ``metric == "pq"``, ``pq`` (a
    :class:`~adaseg.eval.pq.PQStats` keyed by dataset category id)), the FLOP counts of the
    first images (:class:`~adaseg.eval.flops.FlopCount` with an ``encoder`` scope), the
    dataset's ``categories`` in contiguous order and the AP matching of the same images."""
    n, c = len(per_image), len(categories)
    position = {int(cat["id"]): k for k, cat in enumerate(categories)}
    seg = np.zeros((n, c, 3), dtype=np.int64)
    pq = np.zeros((n, c, 4), dtype=np.float64) if metric == "pq" else None
    for i, r in enumerate(per_image):
        m = r["cm"].matrix
        tp = np.diag(m[:, :c])
        seg[i, :, 0] = tp
        seg[i, :, 1] = m[:, :c].sum(axis=0) - tp
        seg[i, :, 2] = m.sum(axis=1) - tp
        if pq is not None:
            for cid, s in r["pq"].per_class.items():
                pq[i, position[int(cid)]] = (s.tp, s.fp, s.fn, s.iou)
    return ImageParts(
        image_ids=np.asarray(image_ids),
        parent_fingerprint=parent_fingerprint,
        metric=metric,
        category_ids=np.asarray([int(cat["id"]) for cat in categories], dtype=np.int64),
        isthing=np.asarray([bool(cat.get("isthing", 0)) for cat in categories], dtype=bool),
        seg=seg,
        exits=np.asarray([int(r["exit"]) for r in per_image], dtype=np.int64),
        gflops_total=np.asarray([float(fc.total) for fc in flop_counts], dtype=np.float64) / 1e9,
        gflops_encoder=np.asarray([float(fc.scopes["encoder"]) for fc in flop_counts], dtype=np.float64) / 1e9,
        pq=pq,
        ap=ap_matches,
    )


# ---------------------------------------------------------------------- reading
def parts_path_for(report_path: str | Path) -> Path:
    """``reports/eval_<name>.parts.safetensors`` beside ``reports/eval_<name>.json``."""
    report_path = Path(report_path)
    return report_path.with_name(report_path.stem + ".parts.safetensors")


def load_parts(report_json_path: str | Path) -> ImageParts:
    """The per-image parts of the eval report at ``report_json_path``, verified: the file the
    report names exists beside it, its bytes match its content hash and that hash is the one
    the report recorded. Raises :class:`PartsError` with one line naming the file."""
    from adaseg.storage.integrity import IntegrityError, read_safetensors

    report_path = Path(report_json_path)
    report = read_report(report_path)
    record = report.get("parts")
    rerun = f"re-run `adaseg eval` with the settings in {report_path}"
    if not isinstance(record, dict) or not isinstance(record.get("file"), str) \
            or not isinstance(record.get("content_sha256"), str):
        raise PartsError(f"{report_path} records no per-image parts (written before they existed?): {rerun}")
    path = report_path.parent / Path(record["file"]).name
    if not path.is_file():
        raise PartsError(f"{path}: the per-image parts of {report_path.name} are missing; {rerun}")
    try:
        read = read_safetensors(path, hint=rerun)
    except IntegrityError as exc:
        raise PartsError(str(exc)) from None
    meta = read.meta or {}
    if meta.get("format") != FORMAT_VERSION or read.content_hash is None:
        raise PartsError(f"{path} is not an adaseg per-image parts file ({FORMAT_VERSION}); {rerun}")
    if read.content_hash != record["content_sha256"]:
        raise PartsError(f"{path} does not belong to {report_path.name} (content hash {read.content_hash[:12]}, the "
                         f"report records {record['content_sha256'][:12]}): {rerun}")
    t = {k: v.numpy() for k, v in read.tensors.items()}
    try:
        ap = None
        if "ap_det_score" in t:
            ap = ApMatches(**{f: t[f"ap_{f}"] for f in _AP_FIELDS})
        return ImageParts(
            image_ids=np.asarray(meta["image_ids"]), parent_fingerprint=str(meta["parent_fingerprint"]),
            metric=str(meta["metric"]), category_ids=t["category_ids"], isthing=t["isthing"], seg=t["seg"],
            exits=t["exits"], gflops_total=t["gflops_total"], gflops_encoder=t["gflops_encoder"], pq=t.get("pq"),
            ap=ap,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PartsError(f"{path}: malformed per-image parts ({exc}); {rerun}") from None


def read_report(path: str | Path) -> dict[str, Any]:
    """An eval report's JSON; :class:`PartsError` naming ``path`` when it is not one."""
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
    return data
