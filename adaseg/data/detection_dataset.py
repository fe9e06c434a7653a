"""Detection data as a torch Dataset: images + boxes from a COCO instances JSON.

Sample (``dataset[i]``)::

    image       (3, H, W) float32, ImageNet-normalised (as the segmentation samples)
    boxes       (n, 4) float32 xyxy in pixels of the transformed image: the non-crowd boxes
                with width and height > 0 that the transform left in the image
    labels      (n,) int64 contiguous class ids
    image_id, file_name, orig_size (H0, W0), difficulty   as the segmentation samples

Crowd boxes (``iscrowd`` 1) are not training targets: DETR drops them from its targets (its
COCO loader keeps only ``iscrowd == 0``), since a crowd box marks a region of many unlabeled
instances, not one object. Evaluation keeps them as COCOeval does (regions where detections
are neither true nor false positives): :meth:`DetectionDataset.instances_gt` gives the JSON's
annotations unchanged. Images without annotations are samples with n = 0 (negatives).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from adaseg.data.dataset import SegmentationDataset
from adaseg.data.meta import PIXEL_MEAN, PIXEL_STD
from adaseg.data.panoptic_io import DataError, read_image


class DetectionDataset(SegmentationDataset):
    """Images + boxes (see the module docstring). Seeding, pickling and ``records`` as
    :class:`~adaseg.data.dataset.SegmentationDataset`; ``records`` are
    :class:`~adaseg.data.coco_detection.DetRecord`; ``transform`` is a box transform
    (:mod:`adaseg.data.box_transforms`)."""

    def load_raw(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> image (H, W, 3) uint8, boxes (n, 4) float64 xyxy pixels clipped to the image,
        labels (n,) int64: the non-crowd annotations with width and height > 0.
        DataError when the image's size is not the JSON's."""
        rec = self.records[i]
        image = read_image(rec.image_path)
        if image.shape[:2] != (rec.height, rec.width):
            raise DataError(f"{rec.image_path}: image is {image.shape[1]}x{image.shape[0]} but the instances JSON "
                            f"says {rec.width}x{rec.height}")
        anns = [a for a in rec.annotations if not a["iscrowd"]]
        boxes = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, rec.width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, rec.height)
        labels = np.asarray([self.meta.to_contiguous(a["category_id"]) for a in anns], dtype=np.int64)
        real = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return image, boxes[real], labels[real]

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        image_np, boxes, labels = self.load_raw(i)
        chw = image_np.transpose(2, 0, 1).astype(np.float32)
        keep = np.ones(len(boxes), dtype=bool)
        if self.transform is not None:
            chw, boxes, keep = self.transform(chw, boxes, self.generator)
        mean = np.asarray(PIXEL_MEAN, dtype=np.float32)[:, None, None]
        std = np.asarray(PIXEL_STD, dtype=np.float32)[:, None, None]
        image = np.ascontiguousarray((chw - mean) / std, dtype=np.float32)
        return {
            "image": torch.from_numpy(image),
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes[keep], dtype=np.float32)),
            "labels": torch.from_numpy(labels[keep].copy()),
            "image_id": rec.image_id,
            "file_name": os.path.basename(rec.image_path),
            "orig_size": (rec.height, rec.width),
            "difficulty": rec.difficulty,
        }

    def instances_gt(self, i: int) -> tuple[dict, list[dict]]:
        """Image ``i``'s ground truth as the instances JSON has it: its COCO ``images`` entry
        (``id``, ``height``, ``width``) and its annotations (copies of the JSON's dicts, crowd
        included, in file order)."""
        rec = self.records[i]
        return ({"id": rec.image_id, "height": rec.height, "width": rec.width},
                [dict(a) for a in rec.annotations])

    def panoptic_gt(self, i: int):
        raise DataError(f"{self.source}: detection data (a COCO instances JSON) has boxes only, no panoptic "
                        "ground truth")
