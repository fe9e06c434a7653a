"""The evaluator interface: what one task (panoptic, semantic, instance, ...) owns of evaluation.

An :class:`Evaluator` is stateless; whatever it reads of the dataset comes from the
:class:`~adaseg.eval.scoring.Scorer` (the dataset, its categories, cached ground truth) passed
to it. It owns three things:

1. **Evaluation** (``adaseg eval``): :meth:`~Evaluator.predict` asks the model's postprocess for
   its kind of prediction, :meth:`~Evaluator.score` turns one image's prediction into a
   picklable per-image *record* (gathered over ranks), :meth:`~Evaluator.summarize` turns the
   records of all images into the report's figures and the evaluator's *part* of the per-image
   parts file.
2. **Per-image parts** (:class:`~adaseg.eval.image_parts.ImageParts`): its part is stored as the
   tensors :meth:`~Evaluator.part_tensors` names and read back by
   :meth:`~Evaluator.part_from_tensors`; :meth:`~Evaluator.figures_of` recomputes its figures on
   any resample of the images (bootstrap, compare, sweep intervals).
3. **Step B's per-image quality** (only evaluators with a ``metric``): :meth:`~Evaluator.image_quality`
   gives an image's quality in [0, 1] (NaN where undefined) and its sparse per-class parts
   (named ``part_names``) for the derived dataset; :meth:`~Evaluator.quality_from_parts`
   recomputes a utility from those parts.

Which evaluators score a (model task, data task) pair, and which of them gives Step B's quality,
is :mod:`adaseg.eval.tasks.registry`'s table.

**Detection (box AP)** was added as this outline says: one module ``detection.py`` plus its lines
in the registry (it reports AP_S/M/L too, recomputed per resample like AP, and its Step B
quality is ``box_ap50``, the image's AP at IoU 0.5 over its own boxes, see its ``image_quality``):

* ``task = "detection"``, ``record = part = "box"`` (its record key and ImageParts keyword),
  ``figures = ("AP_box", "AP50_box", "AP75_box")`` (new names: a panoptic report keeps ``AP`` for
  masks), ``primary = "AP_box"``, ``sweep_keys = ("AP_box",)``.
* ``predict``: ``model.postprocess(out, batch["sizes"], task="detection",
  output_sizes=batch["orig_sizes"])`` (``at_original_size = True``), giving per image
  ``{"boxes" (n, 4) xyxy, "scores" (n,), "labels" (n,) contiguous}``.
* ``score``: the image's COCO ``images`` entry, its GT boxes (``scorer.dataset``'s detection
  targets, dataset category ids, ``iscrowd`` kept) and its results ``{image_id, category_id,
  bbox: [x, y, w, h], score}``.
* ``summarize``: one pycocotools ``COCOeval(..., iouType="bbox")`` over all records (as
  :func:`adaseg.eval.ap.instance_ap` does for ``"segm"``), keeping the per-image matching
  (:meth:`adaseg.eval.ap_matches.ApMatches.from_cocoeval`) as its part; ``part_tensors`` /
  ``part_from_tensors`` / ``check_part`` / ``figures_of`` as :mod:`.instance` with a ``box_``
  tensor prefix. Test it against pycocotools on hand-made boxes.
* Step B: set ``metric`` (e.g. ``"box_ap"``), ``part_names`` and implement ``image_quality`` /
  ``quality_from_parts`` only if a detection model is gated; else leave ``metric = None``.
* Registry: the evaluator in ``EVALUATORS`` (its place sets its sweep columns) and a
  :class:`Suite` for ``("detection", "detection")``. Nothing in engine/ or analysis/ changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch


class Summary(NamedTuple):
    """What an evaluator makes of all images' records: the report's dataset-level ``figures``,
    its per-image means (``image_figures``, listed after every evaluator's figures) and its
    per-image ``part``."""

    figures: dict[str, Any]
    image_figures: dict[str, Any]
    part: Any


class Evaluator(ABC):
    """One task's evaluation (see the module docstring). Subclasses set the class attributes
    and implement the methods of the jobs they do."""

    task: str = ""                      # registry key (and usually model.postprocess's task)
    record: str = ""                    # key of its per-image record in an evaluation's result rows
    part: str = ""                      # ImageParts keyword / attribute of its per-image part
    postprocess: str = ""               # the model.postprocess task it scores
    at_original_size: bool = False      # postprocess at the image's original size (else eval size)
    figures: tuple[str, ...] = ()       # dataset-level figures its part recomputes (report keys)
    image_figures: tuple[str, ...] = () # per-image means, after every evaluator's figures
    primary: str = ""                   # the headline figure (compare's default, a sweep's quality)
    sweep_keys: tuple[str, ...] = ()    # the figures a sweep row carries
    metric: str | None = None           # Step B: the name files record for its quality; None: none
    part_names: tuple[str, ...] = ()    # Step B: per-class parts stored with the quality
    utilities: tuple[str, ...] = ()     # Step B: what quality_from_parts recomputes
    quality_label: str = ""             # Step B: how tables name its quality (default: ``primary``)

    # ------------------------------------------------------------------ evaluation
    def predict(self, model, out, batch) -> list:
        """Per-image predictions of this task from the model's output ``out`` on ``batch``."""
        extra = {"output_sizes": batch["orig_sizes"]} if self.at_original_size else {}
        return model.postprocess(out, batch["sizes"], task=self.postprocess, **extra)

    @abstractmethod
    def score(self, scorer, batch, j: int, index: int, prediction) -> Any:
        """The per-image record of image ``index`` (row ``j`` of ``batch``); picklable."""
        ...

    @abstractmethod
    def summarize(self, scorer, records: Sequence[Any]) -> Summary:
        """The report's figures and the per-image part from every image's record, in order."""
        ...

    # ------------------------------------------------------------------ per-image parts
    def part_of(self, records: Sequence[Any], categories: list[dict]) -> Any:
        """The per-image part from the records alone (where no dataset-level pass is needed)."""
        raise TypeError(f"the {self.task} part needs summarize(): it cannot be made from the records alone")

    @abstractmethod
    def check_part(self, part, n: int, c: int) -> None:
        """Raise ValueError (``ImageParts: ...``) unless ``part`` fits N images and C classes."""
        ...

    @abstractmethod
    def part_tensors(self, part) -> dict[str, np.ndarray]:
        """The part as named arrays of the parts file."""
        ...

    @abstractmethod
    def part_from_tensors(self, tensors: dict[str, np.ndarray]) -> Any:
        """The part read back from a parts file's arrays; None when the file has none."""
        ...

    @abstractmethod
    def figures_of(self, part, parts, idx: np.ndarray | None, weight: np.ndarray | None, want: set) -> dict:
        """This evaluator's figures (and image figures) in ``want`` on the resample given by
        ``idx`` ((L,) indices) / ``weight`` ((N,) counts); both None: all images in order, the
        report's arithmetic. ``parts``: the ImageParts (``isthing``, ``num_images``,
        ``id_rank``, ``cached``)."""
        ...

    # ------------------------------------------------------------------ Step B
    def image_quality(self, scorer, batch, j: int, index: int, prediction) -> tuple[float, list]:
        """Image ``index``'s quality (NaN where undefined) and its ``(class, values)`` parts."""
        raise TypeError(f"the {self.task} evaluator gives no per-image quality")

    def quality_from_parts(self, index: torch.Tensor, values: torch.Tensor, n: int, e: int,
                           utility: str) -> torch.Tensor:
        """(N, E) ``utility`` from the derived dataset's sparse parts; NaN where undefined.
        Raises ValueError for a utility this evaluator does not give."""
        raise TypeError(f"the {self.task} evaluator gives no per-image quality")


def weighted_sum(arr: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
    """Sum of ``arr`` (N, ...) over images: in order (the report's arithmetic) when ``weight``
    is None, else weighted by the (N,) counts."""
    if weight is None:
        return arr.sum(axis=0)  # over images one after another: the report's order
    return (weight.astype(np.float64) @ arr.reshape(len(arr), -1)).reshape(arr.shape[1:])


def mean_by_cell(index: torch.Tensor, valid: torch.Tensor, value: torch.Tensor, n: int, e: int) -> torch.Tensor:
    """(N, E) mean of ``value`` over the sparse rows ``index`` ((M, 3): image, exit column,
    class) that are ``valid``; NaN where a cell has none."""
    flat = index[:, 0] * e + index[:, 1]
    sums = torch.zeros(n * e, dtype=torch.float64).index_add_(0, flat[valid], value[valid])
    counts = torch.zeros(n * e, dtype=torch.float64).index_add_(0, flat[valid], torch.ones_like(value[valid]))
    out = sums / counts
    out[counts == 0] = float("nan")
    return out.view(n, e)


@dataclass(frozen=True)
class Suite:
    """The evaluators of one (model task, data task) pair.

    ``evaluators`` are in the order the report lists their figures; ``quality`` is the one
    whose per-image quality Step B records, and its ``metric`` names the suite in every file
    (report ``info.metric``, parts file, derived dataset)."""

    evaluators: tuple[Evaluator, ...]
    quality: Evaluator

    def __post_init__(self) -> None:
        if self.quality not in self.evaluators or self.quality.metric is None:
            raise ValueError(f"Suite: {self.quality.task} gives no per-image quality among these evaluators")

    @property
    def metric(self) -> str:
        return self.quality.metric  # type: ignore[return-value]

    @property
    def figure_order(self) -> tuple[Evaluator, ...]:
        """The quality's evaluator first, then the others in report order: the order of the
        per-image parts' figures and of compare's defaults."""
        return (self.quality, *(e for e in self.evaluators if e is not self.quality))

    @property
    def figure_names(self) -> tuple[str, ...]:
        """Every figure the per-image parts recompute: figures, then per-image means."""
        order = self.figure_order
        return (*(k for e in order for k in e.figures), *(k for e in order for k in e.image_figures))

    @property
    def primaries(self) -> tuple[str, ...]:
        return tuple(e.primary for e in self.figure_order)
