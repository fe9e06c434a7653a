"""What :class:`~adaseg.predict.Predictor` returns for one image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class PausedStage:
    """Tokens one pause stage paused in this image: after encoder ``layer``, the tokens at
    ``positions`` (m,) int64 of the full token map (every level of the encoder's map, in
    order, each row-major over the padded input; padding tokens included, they pause first)."""

    layer: int
    positions: np.ndarray


@dataclass
class Prediction:
    """One image's prediction, at its original (displayed) size (H0, W0).

    Fields:
        name: the stem of its output files; ``source``: the file it was read from (or "").
        size: (H0, W0); ``note``: what was converted on reading (grayscale, alpha, 16-bit,
            EXIF orientation), or None.
        task: ``"panoptic"``, ``"semantic"``, ``"instance"`` or ``"detection"``.
        panoptic: (H0, W0) int32 segment ids (0 = void) for the panoptic task, else None.
        segments: the panoptic segments, COCO ``segments_info`` entries with the dataset's
            category ids (``id``, ``category_id``, ``iscrowd``, ``area``, ``bbox``) plus
            ``isthing`` and the query's ``score``.
        semantic: (H0, W0) int64 class index (position in the dataset's categories sorted by
            id: ``predictor.meta.categories[k]``), every segmentation task (a panoptic model's semantic
            inference).
        instances: instance task: dicts with ``category_id`` (dataset id), ``score`` and
            ``mask`` (H0, W0) bool, else None.
        detections: detection task (a DETR): one dict per query whose class is a thing of the
            dataset, ``category_id`` (dataset id), ``score`` and ``box`` [x0, y0, x1, y1]
            float pixel edges at (H0, W0) (COCO's ``bbox`` is x0, y0, x1 - x0, y1 - y0), else None.
        score_threshold: the score from which a detection is drawn on the pictures (every
            detection is in ``detections`` and the results file).
        exit: the encoder layer the image left at (the gate's choice with a gate);
            ``depth``: the encoder's layers K; ``exit_source``: ``"gate"``, ``"fixed"`` or
            ``"full"``.
        paused: one :class:`PausedStage` per pause stage the image reached.
        token_shapes: (h_l, w_l) of each token level of the padded input ``input_size``;
            ``valid_size``: (h, w) of the image inside it (after the eval transform).
        gflops: ``{"total", "encoder"}`` GFLOPs of this image alone (2 x multiply-adds,
            :mod:`adaseg.eval.flops`), or None when not counted.
        image: (H0, W0, 3) uint8 the RGB the model saw (before resizing), for pictures.
        early_exit: paused tokens were labelled by the auxiliary decoder of their pause layer
            (``pause_output="aux"``), not by the main decoder.
    """

    name: str
    size: tuple[int, int]
    task: str
    exit: int
    depth: int
    exit_source: str
    token_shapes: list[tuple[int, int]]
    input_size: tuple[int, int]
    valid_size: tuple[int, int]
    paused: list[PausedStage] = field(default_factory=list)
    panoptic: np.ndarray | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)
    semantic: np.ndarray | None = None
    instances: list[dict[str, Any]] | None = None
    detections: list[dict[str, Any]] | None = None
    score_threshold: float = 0.5
    gflops: dict[str, float] | None = None
    note: str | None = None
    source: str = ""
    image: np.ndarray | None = field(default=None, repr=False)
    image_id: Any = None
    early_exit: bool = False

    def pause_grids(self) -> list[np.ndarray]:
        """Per token level, (h_l, w_l) int64: the layer after which each token paused, 0 for
        tokens that ran to the image's exit. Over the padded input (crop with
        :meth:`valid_cells`)."""
        grids = [np.zeros(shape, dtype=np.int64) for shape in self.token_shapes]
        starts = np.cumsum([0] + [h * w for h, w in self.token_shapes])
        for stage in self.paused:
            for level, grid in enumerate(grids):
                pos = stage.positions[(stage.positions >= starts[level]) & (stage.positions < starts[level + 1])]
                grid.reshape(-1)[pos - starts[level]] = stage.layer
        return grids

    def valid_cells(self, level: int) -> tuple[int, int]:
        """(rows, cols) of level ``level``'s tokens that cover the image (not only padding)."""
        h, w = self.token_shapes[level]
        return (-(-self.valid_size[0] * h // self.input_size[0]), -(-self.valid_size[1] * w // self.input_size[1]))

    def paused_in_image(self) -> list[dict[str, Any]]:
        """Per stage: ``layer``, ``paused`` (all positions), ``paused_image`` (those covering
        the image), ``tokens_image`` (image tokens in all levels)."""
        grids = self.pause_grids()
        tokens = sum(r * c for r, c in (self.valid_cells(l) for l in range(len(grids))))
        rows = []
        for stage in self.paused:
            n = 0
            for level, grid in enumerate(grids):
                r, c = self.valid_cells(level)
                n += int((grid[:r, :c] == stage.layer).sum())
            rows.append({"layer": stage.layer, "paused": int(stage.positions.size), "paused_image": n,
                         "tokens_image": int(tokens)})
        return rows
