"""Which evaluators score what: the task registry and the (model task, data task) table.

* :data:`EVALUATORS`: task name -> evaluator. Their order is the column order of tables over
  reports of any task (a sweep row's quality columns).
* :data:`SUITES`: (model task, data task) -> :class:`~adaseg.eval.tasks.base.Suite`. A panoptic
  model on panoptic data is scored by semantic + panoptic + instance (report: mIoU..., PQ...,
  AP..., mean_image_PQ) with PQ as Step B's quality; any other pair by semantic alone (mIoU),
  e.g. Segmenter, or a panoptic model on a semantic dataset (:data:`DEFAULT_SUITE`). A
  detection model (DETR) is scored by box AP on detection data (``coco-det:ROOT``) and on
  panoptic data (thing segments as boxes); the pairs nothing can score (a segmentation model
  on detection data: boxes have no masks; a detection model on semantic data: no instances)
  are refused by :func:`suite_for` with one line.
* A suite is named in files by its quality's ``metric`` (``"pq"``, ``"miou"``):
  :func:`suite_named` reads it back.
"""

from __future__ import annotations

from adaseg.data.panoptic_io import DataError
from adaseg.eval.tasks.base import Evaluator, Suite
from adaseg.eval.tasks.detection import DETECTION
from adaseg.eval.tasks.instance import INSTANCE
from adaseg.eval.tasks.panoptic import PANOPTIC
from adaseg.eval.tasks.semantic import SEMANTIC

EVALUATORS: dict[str, Evaluator] = {e.task: e for e in (PANOPTIC, SEMANTIC, INSTANCE, DETECTION)}

DEFAULT_SUITE = Suite(evaluators=(SEMANTIC,), quality=SEMANTIC)
_BOXES = Suite(evaluators=(DETECTION,), quality=DETECTION)
SUITES: dict[tuple[str, str], Suite] = {
    ("panoptic", "panoptic"): Suite(evaluators=(SEMANTIC, PANOPTIC, INSTANCE), quality=PANOPTIC),
    # a detection model (DETR) on detection data (an instances JSON) or on panoptic data (its
    # thing segments as boxes)
    ("detection", "detection"): _BOXES,
    ("detection", "panoptic"): _BOXES,
}


def suite_for(model_task: str, data_task: str) -> Suite:
    """The evaluators of a ``model_task`` model on a ``data_task`` dataset. DataError (one
    line) for a pair that cannot be trained or scored: a model that is not a detection model
    on detection data (boxes only: no masks, no semantic maps), a detection model on data
    without instances (semantic)."""
    if data_task == "detection" and model_task != "detection":
        raise DataError(f"a {model_task} model cannot be trained or scored on detection data (boxes only, no "
                        "masks): use a detection model (detr_tiny, detr_r50) or panoptic data")
    if model_task == "detection" and data_task not in ("detection", "panoptic"):
        raise DataError(f"a detection model needs boxes: {data_task} data has no instances to take them from "
                        "(use coco-det:ROOT or panoptic data)")
    return SUITES.get((model_task, data_task), DEFAULT_SUITE)


def _by_metric() -> dict[str, Suite]:
    out: dict[str, Suite] = {}
    for suite in (*SUITES.values(), DEFAULT_SUITE):
        out.setdefault(suite.metric, suite)
    return out


SUITE_NAMES: dict[str, Suite] = _by_metric()


def suite_named(metric: str) -> Suite:
    """The suite a file names by ``metric``; ValueError for an unknown name."""
    try:
        return SUITE_NAMES[metric]
    except (KeyError, TypeError):
        raise ValueError(f"metric must be one of {', '.join(repr(m) for m in SUITE_NAMES)}, got {metric!r}") from None


QUALITY: dict[str, Evaluator] = {e.metric: e for e in EVALUATORS.values() if e.metric is not None}
"""Step B: the name a derived dataset records for its quality -> the evaluator that gives it."""


def sweep_keys() -> tuple[str, ...]:
    """Every task's sweep-row figures, in registry order."""
    return tuple(k for e in EVALUATORS.values() for k in e.sweep_keys)
