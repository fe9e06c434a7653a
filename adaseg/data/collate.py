"""Batching: pad images to a common (size-divisible) shape with a padding mask; the loader.

``collate(batch)`` ->::

    images        (B, 3, Hp, Wp) float32, zero (= the mean colour) on padding
    padding_mask  (B, Hp, Wp) bool, True on padding
    targets       list of B dicts: masks (n, Hp, Wp) bool (False on padding), labels (n,)
                  int64, semantic (Hp, Wp) int64 (255 on padding)
    image_ids, file_names, orig_sizes, sizes (h, w before padding), difficulty: lists of B

Detection samples (:class:`~adaseg.data.detection_dataset.DetectionDataset`: ``boxes``, no
``masks``) get DETR's targets instead: ``labels`` (n,) int64 and ``boxes`` (n, 4) float32
normalised ``cx, cy, w, h`` over the image's own (unpadded) size, as DETR's criterion reads
them (:func:`box_target`); the rest of the batch is the same.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.utils.data import DataLoader

from adaseg.data.meta import IGNORE_LABEL
from adaseg.data.transforms import ceil_to


def collate(batch: list[dict], *, size_divisibility: int = 32) -> dict:
    """Stack samples of :class:`~adaseg.data.dataset.SegmentationDataset` (see module docstring).

    ``size_divisibility``: Hp and Wp are rounded up to a multiple of it (1 = no rounding).
    """
    if not batch:
        raise ValueError("collate: empty batch")
    hp = ceil_to(max(s["image"].shape[1] for s in batch), size_divisibility)
    wp = ceil_to(max(s["image"].shape[2] for s in batch), size_divisibility)
    b = len(batch)
    # numpy buffers: padding is single-threaded memory work, so collating in the main process
    # (no loader workers) does not contend for torch's intra-op threads
    images = np.zeros((b, 3, hp, wp), dtype=np.float32)
    padding = np.ones((b, hp, wp), dtype=bool)
    targets = []
    for i, s in enumerate(batch):
        _, h, w = s["image"].shape
        images[i, :, :h, :w] = s["image"].numpy()
        padding[i, :h, :w] = False
        if "masks" not in s:
            targets.append(box_target(s["boxes"], s["labels"], (h, w)))
            continue
        masks = np.zeros((s["masks"].shape[0], hp, wp), dtype=bool)
        masks[:, :h, :w] = s["masks"].numpy()
        semantic = np.full((hp, wp), IGNORE_LABEL, dtype=np.int64)
        semantic[:h, :w] = s["semantic"].numpy()
        targets.append({"masks": torch.from_numpy(masks), "labels": s["labels"],
                        "semantic": torch.from_numpy(semantic)})
    images, padding = torch.from_numpy(images), torch.from_numpy(padding)
    return {
        "images": images,
        "padding_mask": padding,
        "targets": targets,
        "image_ids": [s["image_id"] for s in batch],
        "file_names": [s["file_name"] for s in batch],
        "orig_sizes": [tuple(s["orig_size"]) for s in batch],
        "sizes": [tuple(s["image"].shape[1:]) for s in batch],
        "difficulty": [s["difficulty"] for s in batch],
    }


def box_target(boxes: torch.Tensor, labels: torch.Tensor, size: tuple[int, int]) -> dict:
    """(n, 4) xyxy pixel boxes of an image of ``size`` (h, w) and (n,) labels -> DETR's target
    ``{"labels": (n,) int64, "boxes": (n, 4) float32 cx, cy, w, h normalised by (w, h)}``."""
    h, w = size
    b = boxes.to(torch.float64).reshape(-1, 4) / torch.tensor([w, h, w, h], dtype=torch.float64)
    b = b.clamp(0, 1)
    cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
    return {"labels": labels.to(torch.int64), "boxes": cxcywh.to(torch.float32)}


def _reseed(dataset, seed: int) -> None:
    # walk through wrappers such as torch.utils.data.Subset to the SegmentationDataset
    while dataset is not None:
        if hasattr(dataset, "reseed"):
            dataset.reseed(seed)
            return
        dataset = getattr(dataset, "dataset", None)


def _worker_init(_worker_id: int) -> None:
    # torch seeds each worker with base_seed + worker_id, base_seed drawn from the loader's generator
    info = torch.utils.data.get_worker_info()
    _reseed(info.dataset, torch.initial_seed())


def build_loader(dataset, *, batch_size: int, shuffle: bool, num_workers: int, seed: int, drop_last: bool = False,
                 sampler=None, size_divisibility: int = 32, multiprocessing_context: str | None = None
                 ) -> DataLoader:
    """A DataLoader with :func:`collate`, deterministic from ``seed``: shuffling, and the random
    transforms (the dataset's generator is reseeded from ``seed`` here, and in each worker
    from torch's per-worker seed). ``sampler`` (e.g. a DistributedSampler) excludes
    ``shuffle=True``. ``multiprocessing_context`` ('fork', 'spawn', 'forkserver') picks how
    workers start (None: Python's default); results do not depend on it."""
    if sampler is not None and shuffle:
        raise ValueError("build_loader: pass shuffle=False with a sampler (the sampler shuffles)")
    if batch_size < 1 or num_workers < 0:
        raise ValueError(f"build_loader: need batch_size >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
    generator = torch.Generator()
    generator.manual_seed(seed)
    _reseed(dataset, seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=functools.partial(collate, size_divisibility=size_divisibility),
        drop_last=drop_last,
        generator=generator,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
        multiprocessing_context=multiprocessing_context if num_workers > 0 else None,
    )
