"""Image + box transforms for detection data: the segmentation transforms' geometry applied to
boxes instead of a segment-id map.

Boxes are (n, 4) float ``x0, y0, x1, y1`` in pixel-edge coordinates (a box covering pixel
columns 3..5 has x0 = 3, x1 = 6), the convention under which a resize by ``s`` maps an edge
``x`` to ``x * s`` (torch's bilinear with ``align_corners=False`` maps pixel edges that way).

Train (:class:`BoxTrainTransform`): the same random draws as
:class:`~adaseg.data.transforms.TrainTransform` (:meth:`~adaseg.data.transforms.TrainTransform.draw`:
scale, crop window, flip, from the dataset's per-iteration generator), so training stays
deterministic and resumable from the loader's seed. The crop clips boxes to the window and
drops those with no area left; the flip mirrors x (``x -> w - x``). Eval
(:class:`BoxEvalTransform`): the shorter-side resize of
:class:`~adaseg.data.transforms.EvalTransform`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from adaseg.data.transforms import EvalTransform, TrainTransform


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(3, H, W) float32 0-255 -> (3, h, w): bilinear, antialiased when shrinking, as
    :func:`adaseg.data.transforms.resize` does for the segmentation transforms."""
    if tuple(image.shape[1:]) == tuple(size):
        return image
    shrink = size[0] < image.shape[1] or size[1] < image.shape[2]
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    out = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=shrink)[0]
    return np.clip(out.numpy(), 0.0, 255.0)


def scale_boxes(boxes: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """(n, 4) xyxy boxes of an image of ``src`` (H, W) -> the same boxes on ``dst`` (h, w)."""
    sy, sx = dst[0] / src[0], dst[1] / src[1]
    return boxes * np.asarray([sx, sy, sx, sy], dtype=np.float64)


def crop_boxes(boxes: np.ndarray, top: int, left: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes in the window at (``top``, ``left``) of ``size`` (h, w), clipped to it ->
    (boxes (n, 4), keep (n,) bool: width and height > 0 left)."""
    h, w = size
    out = boxes - np.asarray([left, top, left, top], dtype=np.float64)
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out, keep


def flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Horizontal mirror of (n, 4) xyxy boxes in an image ``width`` pixels wide."""
    out = boxes.copy()
    out[:, 0], out[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return out


@dataclass(frozen=True)
class BoxTrainTransform(TrainTransform):
    """Large-scale jitter + crop + flip on an image and its boxes (arguments as
    :class:`~adaseg.data.transforms.TrainTransform`)."""

    def __call__(self, image: np.ndarray, boxes: np.ndarray, generator: torch.Generator | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """image (3, H, W) float32 0-255, boxes (n, 4) xyxy pixels -> image (3, h, w), boxes
        (n, 4) in the output image, keep (n,) bool (False: cropped away)."""
        size = tuple(image.shape[1:])
        w = self.draw(size, generator)
        image = resize_image(image, w.scaled)
        boxes = scale_boxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), size, w.scaled)
        image = image[:, w.top:w.top + w.crop[0], w.left:w.left + w.crop[1]]
        boxes, keep = crop_boxes(boxes, w.top, w.left, w.crop)
        if w.flip:
            image = image[:, :, ::-1]
            boxes = flip_boxes(boxes, w.crop[1])
        return np.ascontiguousarray(image), boxes, keep


@dataclass(frozen=True)
class BoxEvalTransform(EvalTransform):
    """The eval resize (arguments as :class:`~adaseg.data.transforms.EvalTransform`) on an
    image and its boxes."""

    def __call__(self, image: np.ndarray, boxes: np.ndarray, generator: torch.Generator | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """image (3, H, W), boxes (n, 4) xyxy -> resized image, scaled boxes, keep (all True)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        keep = np.ones(len(boxes), dtype=bool)
        src = tuple(image.shape[1:])
        size = self.output_size(src)
        return resize_image(image, size), scale_boxes(boxes, src, size), keep
