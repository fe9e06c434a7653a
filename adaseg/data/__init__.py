"""Datasets: the built-in synthetic panoptic set, COCO panoptic, COCO detection, Cityscapes, ADE20K.

Public API (stable; other modules build on it)::

    build_dataset(spec, split, *, train=False, size=None, ...) -> SegmentationDataset
        spec: 'synthetic' | 'coco:ROOT' | 'coco-det:ROOT' | 'cityscapes:ROOT' | 'ade20k:ROOT' | a COCO-panoptic folder
        dataset.meta            DatasetMeta (categories, num_classes, id mappings, thing/stuff ids)
        dataset[i]              dict(image, masks, labels, semantic, image_id, file_name,
                                     orig_size, difficulty)
        dataset.panoptic_gt(i)  (id_map (H0, W0) int64, segments_info) at original resolution
        coco-det: a DetectionDataset, meta.task 'detection': dataset[i] holds boxes (n, 4) xyxy
            pixels and labels instead of masks; dataset.instances_gt(i) -> (image entry, annotations)
    collate(batch) -> dict(images, padding_mask, targets, image_ids, orig_sizes, difficulty, ...)
    build_loader(dataset, *, batch_size, shuffle, num_workers, seed, drop_last=False, sampler=None)
"""

from adaseg.data.build import build_dataset, parse_spec
from adaseg.data.collate import build_loader, collate
from adaseg.data.dataset import SegmentationDataset
from adaseg.data.detection_dataset import DetectionDataset
from adaseg.data.meta import IGNORE_LABEL, Category, DatasetMeta
from adaseg.data.panoptic_io import DataError

__all__ = [
    "build_dataset", "parse_spec", "build_loader", "collate", "SegmentationDataset", "DetectionDataset", "DatasetMeta",
    "Category",
    "IGNORE_LABEL", "DataError",
]
