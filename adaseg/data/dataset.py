"""One torch Dataset for every source: per-image records + a transform.

A record points at an image and a label file. Label files are either COCO-panoptic PNGs
(segments from the JSON) or single-channel semantic PNGs (ADE20K: value ``k`` >= 1 is
category ``k``, 0 is void); both are turned into one segment-id map, which the transform
moves together with the image (see :mod:`adaseg.data.transforms`).

Sample (``dataset[i]``)::

    image       (3, H, W) float32, ImageNet-normalised (mean/std on the 0-255 scale)
    masks       (n, H, W) bool, one per non-crowd GT segment present after the transform
    labels      (n,) int64 contiguous class ids
    semantic    (H, W) int64 contiguous ids; 255 on void. Crowd pixels carry their class, as
                in detectron2's panoptic_semseg maps; crowd segments get no mask (Mask2Former).
    image_id    the dataset's image id (int or str)
    file_name   the image file name
    orig_size   (H0, W0) before the transform
    difficulty  generator difficulty in [0, 1] (synthetic only; else None)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from adaseg.data.meta import IGNORE_LABEL, PIXEL_MEAN, PIXEL_STD, DatasetMeta
from adaseg.data.panoptic_io import (
    VOID,
    DataError,
    check_ids_match,
    read_image,
    read_label_png,
    read_panoptic_png,
)


@dataclass(frozen=True)
class Record:
    """One image and its labels. ``segments`` is the panoptic JSON's segments_info (dataset
    category ids), or None for semantic label PNGs."""

    image_id: object
    image_path: str
    label_path: str
    segments: tuple | None
    difficulty: float | None = None


class SegmentationDataset(Dataset):
    """Images + panoptic or semantic labels; see the module docstring for the sample format.

    Args:
        meta: the dataset's :class:`DatasetMeta`.
        records: one :class:`Record` per image (non-empty).
        transform: callable ``(image (3,H,W) float32 0-255, ids (H,W) int64, generator) -> same``
            (numpy arrays) or None.
        source: where the records came from (used in error messages).

    Random transforms draw from the dataset's own ``torch.Generator`` (:meth:`reseed`), so
    a loader is deterministic from its seed with or without worker processes.
    """

    def __init__(self, *, meta: DatasetMeta, records: list[Record], transform=None, source: str = "") -> None:
        if not records:
            raise DataError(f"{source or meta.name}: the dataset has no images")
        self.meta = meta
        self.records = list(records)
        self.transform = transform
        self.source = source
        self.generator = torch.Generator()
        self.generator.manual_seed(0)

    def __getstate__(self) -> dict:
        # the generator travels as plain bytes: torch's multiprocessing pickler would send its
        # state tensor through shared memory, which fails for spawn/forkserver workers
        state = self.__dict__.copy()
        state["generator"] = self.generator.get_state().numpy().tobytes()
        return state

    def __setstate__(self, state: dict) -> None:
        g = torch.Generator()
        g.set_state(torch.frombuffer(bytearray(state["generator"]), dtype=torch.uint8))
        state["generator"] = g
        self.__dict__.update(state)

    def reseed(self, seed: int) -> None:
        """Seed the generator of the random transforms (build_loader and its workers call this)."""
        self.generator.manual_seed(int(seed) % (2**63))

    def __len__(self) -> int:
        return len(self.records)

    @property
    def difficulties(self) -> list[float | None]:
        return [r.difficulty for r in self.records]

    def load_raw(self, i: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, bool]]]:
        """-> image (H,W,3) uint8, ids (H,W) int64, [(segment id, contiguous label, iscrowd)]."""
        rec = self.records[i]
        image = read_image(rec.image_path)
        if rec.segments is None:
            ids = read_label_png(rec.label_path)
            segs = self._semantic_segments(ids, rec.label_path)
        else:
            ids = read_panoptic_png(rec.label_path)
            check_ids_match(ids, list(rec.segments), rec.label_path)
            segs = []
            for s in rec.segments:
                if not self.meta.has_category(s["category_id"]):
                    raise DataError(f"{rec.label_path}: segment {s['id']} has unknown category_id {s['category_id']}")
                segs.append((int(s["id"]), self.meta.to_contiguous(s["category_id"]), bool(s.get("iscrowd", 0))))
        if image.shape[:2] != ids.shape:
            raise DataError(f"{rec.label_path}: label size {ids.shape[1]}x{ids.shape[0]} differs from image "
                            f"{rec.image_path} size {image.shape[1]}x{image.shape[0]}")
        return image, ids, segs

    def _semantic_segments(self, ids: np.ndarray, path: str) -> list[tuple[int, int, bool]]:
        present = np.unique(ids)
        segs = []
        for v in present.tolist():
            if v == VOID:
                continue
            if not self.meta.has_category(v):
                raise DataError(f"{path}: label value {v} is not a category of {self.meta.name}")
            segs.append((v, self.meta.to_contiguous(v), False))
        return segs

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        image_np, ids_np, segs = self.load_raw(i)
        h0, w0 = ids_np.shape
        # numpy except for the image resize: per-sample work stays single-threaded, so a loader
        # without workers does not fight the training process for torch's intra-op threads
        chw = image_np.transpose(2, 0, 1).astype(np.float32)
        if self.transform is not None:
            chw, ids_np = self.transform(chw, ids_np, self.generator)
        mean = np.asarray(PIXEL_MEAN, dtype=np.float32)[:, None, None]
        std = np.asarray(PIXEL_STD, dtype=np.float32)[:, None, None]
        image = np.ascontiguousarray((chw - mean) / std, dtype=np.float32)
        masks, labels, semantic = targets_from_ids(ids_np, segs)
        return {
            "image": torch.from_numpy(image),
            "masks": masks,
            "labels": labels,
            "semantic": semantic,
            "image_id": rec.image_id,
            "file_name": os.path.basename(rec.image_path),
            "orig_size": (h0, w0),
            "difficulty": rec.difficulty,
        }

    def panoptic_gt(self, i: int) -> tuple[np.ndarray, list[dict]]:
        """Ground truth at original resolution: (id_map (H0,W0) int64 with ``R+256G+256^2B``
        ids, segments_info list of dicts ``id, category_id`` (dataset id), ``iscrowd``,
        ``area``, ``bbox``). For semantic datasets each present class is one stuff-like segment
        whose id is its category id."""
        rec = self.records[i]
        if rec.segments is not None:
            ids = read_panoptic_png(rec.label_path)
            check_ids_match(ids, list(rec.segments), rec.label_path)
            return ids, [dict(s) for s in rec.segments]
        ids = read_label_png(rec.label_path)
        segments = []
        for v, _, _ in self._semantic_segments(ids, rec.label_path):
            segments.append(segment_info(ids == v, seg_id=v, category_id=v, iscrowd=0))
        return ids, segments


def targets_from_ids(ids, segs: list[tuple[int, int, bool]]):
    """(H, W) int64 segment ids (numpy or torch) + [(id, label, iscrowd)] -> masks (n,H,W)
    bool, labels (n,) int64, semantic (H,W) int64 (255 = void), as torch tensors. Crowd
    segments get no mask but keep their class in ``semantic``; segments absent from ``ids``
    (cropped away) are dropped."""
    ids = ids.numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    ids = ids.astype(np.int64, copy=False)
    h, w = ids.shape
    if not segs:
        return (torch.zeros(0, h, w, dtype=torch.bool), torch.zeros(0, dtype=torch.int64),
                torch.full((h, w), IGNORE_LABEL, dtype=torch.int64))
    seg_ids = np.array([s[0] for s in segs], dtype=np.int64)
    seg_lab = np.array([s[1] for s in segs], dtype=np.int64)
    crowd = np.array([s[2] for s in segs], dtype=bool)
    order = np.argsort(seg_ids, kind="stable")
    seg_ids, seg_lab, crowd = seg_ids[order], seg_lab[order], crowd[order]
    pos = np.minimum(np.searchsorted(seg_ids, ids), len(seg_ids) - 1)
    known = seg_ids[pos] == ids
    semantic = np.where(known, seg_lab[pos], IGNORE_LABEL)
    present = np.zeros(len(seg_ids), dtype=bool)
    present[pos[known]] = True
    keep = present & ~crowd
    masks = ids[None] == seg_ids[keep][:, None, None]
    return torch.from_numpy(masks), torch.from_numpy(seg_lab[keep].copy()), torch.from_numpy(semantic)


def segment_info(mask: np.ndarray, *, seg_id: int, category_id: int, iscrowd: int) -> dict:
    """COCO-panoptic segments_info entry for a boolean mask (bbox as x, y, w, h)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        bbox = [0, 0, 0, 0]
    else:
        x0, y0 = int(xs.min()), int(ys.min())
        bbox = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
    return {"id": int(seg_id), "category_id": int(category_id), "iscrowd": int(iscrowd),
            "area": int(len(xs)), "bbox": bbox}
