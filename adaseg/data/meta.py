"""Dataset metadata: categories and the dataset-id <-> contiguous-train-id mapping.

Every dataset (built-in synthetic, COCO panoptic, Cityscapes, ADE20K, any COCO-panoptic
folder) exposes one :class:`DatasetMeta`. Models see contiguous ids ``0..num_classes-1``;
files on disk (panoptic JSON, prediction JSON) use the dataset's own category ids.
Contiguous ids follow the order of the categories sorted by dataset id, as detectron2 /
Mask2Former do for COCO panoptic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DATA_TASKS = ("panoptic", "semantic", "detection")
"""What a dataset's labels hold: panoptic segments, semantic maps, or boxes only."""

IGNORE_LABEL = 255
"""Semantic-map value for void, unlabeled and padded pixels."""

# ImageNet statistics on the 0-255 scale (Mask2Former's PIXEL_MEAN / PIXEL_STD).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Category:
    """One category as the dataset's JSON names it."""

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int]


@dataclass(frozen=True)
class DatasetMeta:
    """What a model, a recipe and an evaluator need to know about a dataset.

    Attributes:
        name: short dataset name (``synthetic``, ``coco``, ``cityscapes``, ``ade20k`` or the
            folder name of a plain COCO-panoptic folder).
        task: ``"panoptic"`` (things + stuff with instances), ``"semantic"`` (ADE20K) or
            ``"detection"`` (boxes only: a COCO instances JSON; every category is a thing).
        categories: the categories sorted by dataset id; position = contiguous id.
        ignore_label: semantic value of void pixels (255).
    """

    name: str
    task: str
    categories: tuple[Category, ...]
    ignore_label: int = IGNORE_LABEL
    _id_to_contiguous: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.task not in DATA_TASKS:
            raise ValueError(f"task must be one of {', '.join(DATA_TASKS)}, got {self.task!r}")
        ids = [c.id for c in self.categories]
        if ids != sorted(set(ids)):
            raise ValueError(f"categories must be sorted by id without duplicates, got ids {ids}")
        if len(ids) >= self.ignore_label:
            raise ValueError(f"{len(ids)} categories do not fit below ignore_label={self.ignore_label}")
        object.__setattr__(self, "_id_to_contiguous", {c.id: i for i, c in enumerate(self.categories)})

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.categories]

    @property
    def thing_ids(self) -> list[int]:
        """Contiguous ids of thing classes."""
        return [i for i, c in enumerate(self.categories) if c.isthing]

    @property
    def stuff_ids(self) -> list[int]:
        """Contiguous ids of stuff classes."""
        return [i for i, c in enumerate(self.categories) if not c.isthing]

    def to_contiguous(self, category_id: int) -> int:
        """Dataset category id -> contiguous id; KeyError for an unknown id."""
        return self._id_to_contiguous[int(category_id)]

    def has_category(self, category_id: int) -> bool:
        return int(category_id) in self._id_to_contiguous

    def to_dataset_id(self, contiguous_id: int) -> int:
        """Contiguous id -> dataset category id."""
        return self.categories[int(contiguous_id)].id

    def categories_json(self) -> list[dict]:
        """Categories in COCO panoptic JSON form (what pq_compute / panopticapi read)."""
        return [
            {"id": c.id, "name": c.name, "isthing": int(c.isthing), "color": list(c.color)}
            for c in self.categories
        ]

    @classmethod
    def from_categories_json(cls, *, name: str, task: str, categories: list[dict]) -> "DatasetMeta":
        """Build from COCO-panoptic ``categories`` entries (any order; sorted here)."""
        cats = []
        for c in sorted(categories, key=lambda c: int(c["id"])):
            color = tuple(int(v) for v in c.get("color", fallback_color(int(c["id"]))))
            cats.append(Category(id=int(c["id"]), name=str(c["name"]), isthing=bool(c.get("isthing", 0)),
                                 color=color))  # type: ignore[arg-type]
        return cls(name=name, task=task, categories=tuple(cats))


def fallback_color(category_id: int) -> tuple[int, int, int]:
    # Deterministic, well-spread colours for datasets whose JSON carries none.
    h = (category_id * 2654435761) & 0xFFFFFF
    return (h & 255, (h >> 8) & 255, (h >> 16) & 255)
