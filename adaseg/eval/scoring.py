"""The dataset's side of scoring, shared by Step B (derive) and evaluation: what every
evaluator (:mod:`adaseg.eval.tasks`) reads of one dataset -- its meta, categories in contiguous
order, and the panoptic ground truth of the image being scored (read once per pass).
"""

from __future__ import annotations

from adaseg.eval.tasks.registry import suite_named


class Scorer:
    """One dataset, as the evaluators of ``metric``'s suite read it.

    Args:
        dataset: a :class:`~adaseg.data.SegmentationDataset` (eval transform).
        metric: the suite's name (``"pq"`` or ``"miou"``;
            :func:`adaseg.eval.tasks.registry.suite_for` ``(...).metric``).
    """

    def __init__(self, dataset, *, metric: str):
        self.suite = suite_named(metric)
        self.dataset = dataset
        self.meta = dataset.meta
        self.metric = metric
        self.categories = self.meta.categories_json()
        self._gt_cache: dict[int, tuple] = {}

    def image_id(self, index: int):
        return self.dataset.records[index].image_id

    def panoptic_gt(self, index: int):
        if index not in self._gt_cache:
            self._gt_cache = {index: self.dataset.panoptic_gt(index)}  # keep one: images are read once per pass
        return self._gt_cache[index]
