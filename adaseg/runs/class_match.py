"""A detection checkpoint's classes matched to a dataset's categories.

The public ``facebook/detr-resnet-50`` has a class head of 91 labels + "no object": its
``id2label`` is indexed by COCO *category id* (1 person ... 90 toothbrush), the ids COCO does
not use (0, 12, 26, 29, 30, 45, 66, 68, 69, 71, 83) are placeholder slots named ``"N/A"``.
``--data coco-det:ROOT`` numbers its 80 categories contiguously in sorted-id order. So class
``k`` of the checkpoint is not class ``k`` of the dataset; this module says which it is.

The rule (:func:`match_classes`), for a detection model whose checkpoint records its classes
(``extra["categories"]``, written by ``adaseg import-weights --hf``):

1. **Names decide.** Names are compared normalised (case-folded, runs of spaces, ``_`` and
   ``-`` as one space). Every dataset category must be found, by name, in exactly one of the
   model's classes; model classes named ``N/A`` (placeholder slots) never match. Two dataset
   categories with one name, or a name found in two model classes, are ambiguous: refused.
2. **Ids confirm, where they are known.** The model's recorded ids are category ids when its
   class list has ``N/A`` placeholder slots (transformers' COCO checkpoints: position = COCO
   category id) or when they are not simply its positions 0..K-1 (a dataset's ids, recorded by
   ``init-run``). Then each matched class's id must equal the dataset category's id: names and
   ids telling two stories (a renumbered instances file, labels that are not COCO's) is refused.
   An ``id2label`` without placeholders numbers labels 0..K-1, which say nothing about a
   dataset's ids: names alone decide.
3. **Equal counts keep the old rule.** When not every dataset category is found by name but
   the counts are equal, class ``k`` is category ``k`` (positions; names are not compared, so
   a checkpoint whose ``id2label`` says ``LABEL_0`` ... still scores on its own data). With
   different counts the first dataset category not found is named and the pair refused.

The match is a *class map*: for each model class the dataset's contiguous class, or -1 (an
``N/A`` slot, or a class the dataset does not have): :meth:`adaseg.models.detr.DETR.set_class_map`
labels the model's detections with it and drops the -1 ones, after the softmax over all the
model's classes (scores are the checkpoint's own). ``None`` means the identity (nothing to map).

``train-parent --init`` of such a checkpoint starts a DETR with the dataset's classes: its class
head rows and its auxiliary decoders' class rows (:data:`adaseg.runs.parent.CLASS_HEAD_PREFIXES`)
are the checkpoint's rows of the matched classes in the dataset's order, then the no-object row
(:func:`head_rows`), as DETR fine-tuning on a subset of COCO's classes does.
"""

from __future__ import annotations

import os
import re
from typing import Any, Sequence

from adaseg.runs.run_dir import RunDirError

PLACEHOLDER = "n/a"  # transformers' name for an unused slot of a head indexed by category id

__all__ = ["PLACEHOLDER", "normalise", "ids_are_category_ids", "match_classes", "model_classes",
           "checkpoint_class_map", "head_rows"]


def normalise(name: str) -> str:
    """A class name as compared: case-folded, runs of whitespace, ``_`` and ``-`` one space."""
    return re.sub(r"[\s_\-]+", " ", str(name).casefold()).strip()


def ids_are_category_ids(classes: Sequence[dict]) -> bool:
    """Whether the recorded ids of a model's classes (in class order) are category ids: the
    list has ``N/A`` placeholder slots, or its ids are not just the positions 0..K-1."""
    if any(normalise(c["name"]) == PLACEHOLDER for c in classes):
        return True
    return [int(c["id"]) for c in classes] != list(range(len(classes)))


def match_classes(classes: Sequence[dict], categories: Sequence, *, what: str) -> list[int] | None:
    """The class map of a model's ``classes`` (``[{"id", "name"}]`` in class order) onto a
    dataset's ``categories`` (:class:`~adaseg.data.meta.Category`, contiguous order): per model
    class the dataset's contiguous id or -1; None for the identity (see the module docstring).

    ``what`` names the pair in messages (e.g. ``"--data 'coco-det:/d' vs the checkpoint x"``).
    Raises :class:`RunDirError` (one line) for a missing, ambiguous or id-contradicted match.
    """
    names = [normalise(c["name"]) for c in classes]
    wanted = [normalise(c.name) for c in categories]
    if names == wanted:
        return None
    seen: dict[str, Any] = {}
    for c, n in zip(categories, wanted):
        if n in seen:
            raise RunDirError(f"{what}: dataset categories {seen[n].id} and {c.id} are both named {c.name!r}: "
                              "a model class cannot be matched to either")
        seen[n] = c
    where: dict[str, list[int]] = {}
    for k, n in enumerate(names):
        if n != PLACEHOLDER:
            where.setdefault(n, []).append(k)
    found = []
    for c, n in zip(categories, wanted):
        slots = where.get(n, [])
        if not slots:
            if len(classes) == len(categories):
                return None  # the old rule: class k is category k (names not compared)
            raise RunDirError(f"{what}: dataset category {c.id} {c.name!r} is not among the checkpoint's "
                              f"{len(classes)} classes (matched by name)")
        if len(slots) > 1:
            raise RunDirError(f"{what}: dataset category {c.id} {c.name!r} matches the checkpoint's classes "
                              f"{slots[0]} and {slots[1]} by name")
        found.append(slots[0])
    if ids_are_category_ids(classes):
        for c, k in zip(categories, found):
            if int(classes[k]["id"]) != int(c.id):
                raise RunDirError(f"{what}: dataset category {c.id} {c.name!r} is the checkpoint's class "
                                  f"{classes[k]['name']!r} of category id {classes[k]['id']}: the checkpoint's "
                                  "classes are indexed by category id (its 'N/A' slots, or recorded ids) and "
                                  "these ids differ")
    class_map = [-1] * len(classes)
    for j, k in enumerate(found):
        class_map[k] = j
    return None if class_map == list(range(len(classes))) else class_map


def model_classes(extra: dict[str, Any]) -> list[dict] | None:
    """A checkpoint's own classes in class order, or None when it records none:
    ``extra["model_categories"]`` (a parent made by init-run from a checkpoint whose classes
    were mapped: ``categories`` are then the dataset's), else ``extra["categories"]``, else an
    older DETR import's ``class_names`` (ids 0..K-1)."""
    if extra.get("model_categories"):
        return [dict(c) for c in extra["model_categories"]]
    if extra.get("categories"):
        return [dict(c) for c in extra["categories"]]
    if extra.get("class_names"):
        return [{"id": i, "name": str(n), "isthing": True} for i, n in enumerate(extra["class_names"])]
    return None


def checkpoint_class_map(model, meta, *, spec: str, path: str | os.PathLike, extra: dict[str, Any]
                         ) -> list[int] | None:
    """The class map of detection ``model`` (loaded from ``path``, whose header ``extra`` it
    is) onto dataset ``meta``; None for the identity or when the checkpoint records no classes
    of the model's count (then the positional checks apply). Raises :class:`RunDirError`."""
    classes = model_classes(extra)
    if classes is None or len(classes) != int(model.num_classes):
        return None
    return match_classes(classes, meta.categories, what=f"--data {spec!r} vs the checkpoint {path}")


def head_rows(path: str | os.PathLike, meta, *, what: str) -> list[int] | None:
    """For ``train-parent --init path`` of a detection checkpoint onto dataset ``meta``: the
    checkpoint's class-head rows that become the new model's rows (the matched class of each
    dataset category in the dataset's order, then the no-object row K), or None when the
    classes are the dataset's (identity) or the checkpoint is not a detection model recording
    its classes. Raises :class:`RunDirError` when they do not match."""
    from adaseg.runs.parent import model_family, read_model_config
    from adaseg.storage.checkpoint import read_checkpoint_meta

    name, _, kind = read_model_config(path)
    try:
        if model_family(name) != "detr":
            return None
    except ValueError:
        return None
    classes = model_classes(read_checkpoint_meta(path).extra)
    if classes is None:
        return None
    class_map = match_classes(classes, meta.categories, what=what)
    if class_map is None:
        return None
    rows = [0] * meta.num_classes
    for k, j in enumerate(class_map):
        if j >= 0:
            rows[j] = k
    return rows + [len(classes)]
