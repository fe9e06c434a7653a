"""Image + label transforms (numpy arrays; torch's interpolate for the image resize; no torchvision).

Labels travel through the transforms as one (H, W) int64 *segment-id map* (panoptic id or,
for semantic datasets, the label value), so image, per-segment masks and semantic map stay
consistent by construction: masks and the semantic map are derived after the transform.

Train: random-scale crop (Mask2Former's large-scale jitter: scale the image to fit
``scale * target`` keeping its aspect, then crop a random window of at most ``crop``) and
horizontal flip. Windows are never padded inside a sample; :func:`adaseg.data.collate`
pads the batch and marks padding in ``padding_mask``. Eval: optional shorter-side resize.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from adaseg.data.meta import PIXEL_MEAN, PIXEL_STD


@dataclass(frozen=True)
class TrainTransform:
    """Large-scale jitter + crop + flip.

    Args:
        target: (h, w) box that a scale-1.0 image is fitted into (aspect kept).
        crop: (h, w) largest window kept after scaling.
        min_scale, max_scale: uniform range of the jitter factor.
        flip_prob: probability of a horizontal flip.
    """

    target: tuple[int, int]
    crop: tuple[int, int]
    min_scale: float
    max_scale: float
    flip_prob: float = 0.5

    def __post_init__(self) -> None:
        if not (0 < self.min_scale <= self.max_scale):
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")

    def __call__(self, image: np.ndarray, ids: np.ndarray, generator: torch.Generator | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """image (3, H, W) float32 on 0-255, ids (H, W) int64 -> (3, h, w), (h, w).
        Random draws come from ``generator`` (torch's default generator when None)."""
        w = self.draw(ids.shape, generator)
        image, ids = resize(image, ids, w.scaled)
        image = image[:, w.top:w.top + w.crop[0], w.left:w.left + w.crop[1]]
        ids = ids[w.top:w.top + w.crop[0], w.left:w.left + w.crop[1]]
        if w.flip:
            image, ids = image[:, :, ::-1], ids[:, ::-1]
        return np.ascontiguousarray(image), np.ascontiguousarray(ids)

    def draw(self, size: tuple[int, int], generator: torch.Generator | None = None) -> "Window":
        """The random geometry for an image of ``size`` (H0, W0): four draws from ``generator``
        in a fixed order (scale, top, left, flip), shared by the segmentation and the box
        transforms so both stay deterministic from the loader's seed."""
        g = generator
        h0, w0 = size
        scale = self.min_scale + (self.max_scale - self.min_scale) * float(torch.rand((), generator=g))
        s = scale * min(self.target[0] / h0, self.target[1] / w0)
        h1, w1 = max(1, round(h0 * s)), max(1, round(w0 * s))
        ch, cw = min(self.crop[0], h1), min(self.crop[1], w1)
        top = int(torch.randint(0, h1 - ch + 1, (), generator=g))
        left = int(torch.randint(0, w1 - cw + 1, (), generator=g))
        flip = float(torch.rand((), generator=g)) < self.flip_prob
        return Window(scaled=(h1, w1), top=top, left=left, crop=(ch, cw), flip=flip)


@dataclass(frozen=True)
class Window:
    """One draw of :class:`TrainTransform`: resize to ``scaled`` (h1, w1), keep the window of
    ``crop`` (h, w) at (``top``, ``left``), then mirror it horizontally when ``flip``."""

    scaled: tuple[int, int]
    top: int
    left: int
    crop: tuple[int, int]
    flip: bool


@dataclass(frozen=True)
class EvalTransform:
    """Resize so the shorter side is ``short`` (longer side capped at ``max_size``); ``short=None``
    keeps the native resolution."""

    short: int | None = None
    max_size: int | None = None

    def __call__(self, image: np.ndarray, ids: np.ndarray, generator: torch.Generator | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """image (3, H, W) float32 on 0-255, ids (H, W) int64 -> resized pair."""
        if self.short is None:
            return image, ids
        return resize(image, ids, self.output_size(ids.shape))

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) that an image of ``size`` (H0, W0) is resized to."""
        h0, w0 = size
        if self.short is None:
            return h0, w0
        s = self.short / min(h0, w0)
        if self.max_size is not None and max(h0, w0) * s > self.max_size:
            s = self.max_size / max(h0, w0)
        return max(1, round(h0 * s)), max(1, round(w0 * s))


def resize(image: np.ndarray, ids: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear image (antialiased when shrinking; torch's interpolate), nearest id map;
    (3,H,W) float32, (H,W) int64 -> (3,h,w), (h,w)."""
    if tuple(ids.shape) == tuple(size):
        return image, ids
    shrink = size[0] < ids.shape[0] or size[1] < ids.shape[1]
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    out = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=shrink)[0]
    return np.clip(out.numpy(), 0.0, 255.0), resize_nearest(ids, size)


def resize_nearest(ids: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer map by index gathering (exact for any id value).

    Output pixel centre ``(i + 0.5) * H / h`` picks source row ``floor`` of it (PIL's NEAREST).
    """
    h0, w0 = ids.shape
    rows = np.clip(np.floor((np.arange(size[0]) + 0.5) * (h0 / size[0])).astype(np.int64), 0, h0 - 1)
    cols = np.clip(np.floor((np.arange(size[1]) + 0.5) * (w0 / size[1])).astype(np.int64), 0, w0 - 1)
    return ids[rows[:, None], cols[None, :]]


def normalize(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) float on 0-255 -> ImageNet-normalised float32."""
    mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD, dtype=torch.float32).view(3, 1, 1)
    return (image.float() - mean) / std


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`: (..., 3, H, W) -> 0-255 float."""
    mean = torch.tensor(PIXEL_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return image * std + mean


def ceil_to(x: int, multiple: int) -> int:
    return int(math.ceil(x / multiple) * multiple)
