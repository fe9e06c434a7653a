"""The class-matching rule of adaseg.runs.class_match on hand-made class lists: each expected map
is written out by hand (model class -> dataset contiguous class, -1 dropped)."""

from __future__ import annotations

import pytest

from adaseg.data.meta import Category
from adaseg.runs.class_match import ids_are_category_ids, match_classes, normalise
from adaseg.runs.run_dir import RunDirError


def _cats(*pairs):
    return [Category(i, n, True, (0, 0, 0)) for i, n in sorted(pairs)]


def _classes(names, ids=None):
    return [{"id": i if ids is None else ids[i], "name": n} for i, n in enumerate(names)]


# COCO's id2label 0..5 as facebook/detr-resnet-50 has it: position = COCO category id
COCO6 = _classes(["N/A", "person", "bicycle", "car", "motorcycle", "airplane"])


def test_names_normalised():
    assert normalise("  Traffic_light ") == normalise("traffic-light") == normalise("TRAFFIC   light") == "traffic light"


def test_coco_id_head_onto_a_subset():
    # dataset: car (3) -> 0, motorcycle (4) -> 1; model slot 0 is N/A, person/bicycle/airplane absent
    assert match_classes(COCO6, _cats((3, "Car"), (4, "motorcycle")), what="x") == [-1, -1, -1, 0, 1, -1]


def test_identity_and_equal_count_fallback():
    assert match_classes(_classes(["a", "b"]), _cats((7, "A"), (9, "b")), what="x") is None  # same names, order
    assert match_classes(_classes(["LABEL_0", "LABEL_1"]), _cats((1, "a"), (2, "b")), what="x") is None  # positions
    assert match_classes(_classes(["b", "a"]), _cats((1, "a"), (2, "b")), what="x") == [1, 0]  # a permutation


@pytest.mark.parametrize("classes, cats, why", [
    (COCO6, _cats((3, "car"), (38, "kite")), "dataset category 38 'kite' is not among the checkpoint's 6 classes"),
    (COCO6, _cats((1, "person"), (2, "car")), "dataset category 2 'car' is the checkpoint's class 'car' of "
                                              "category id 3"),
    (_classes(["a", "b", "a"]), _cats((1, "a")), "dataset category 1 'a' matches the checkpoint's classes 0 and 2"),
    (_classes(["a", "b", "c"]), _cats((1, "a"), (2, "A")), "dataset categories 1 and 2 are both named 'A'"),
    (COCO6, _cats((0, "N/A")), "dataset category 0 'N/A' is not among"),
    # recorded ids that are not positions are category ids (a parent's, from its dataset)
    (_classes(["a", "b", "c"], ids=[5, 6, 7]), _cats((6, "a")), "dataset category 6 'a' is the checkpoint's "
                                                                "class 'a' of category id 5"),
])
def test_refusals(classes, cats, why):
    with pytest.raises(RunDirError) as exc:
        match_classes(classes, cats, what="--data 'd' vs the checkpoint c")
    line = str(exc.value)
    assert "\n" not in line and line.startswith("--data 'd' vs the checkpoint c: ") and why in line, line


def test_which_ids_are_category_ids():
    assert ids_are_category_ids(COCO6)  # N/A slots
    assert not ids_are_category_ids(_classes(["a", "b"]))  # label ids 0..K-1
    assert ids_are_category_ids(_classes(["a", "b"], ids=[1, 3]))  # a dataset's ids
    # label positions only: a renumbered dataset is matched by name
    assert match_classes(_classes(["x", "car", "cat"]), _cats((1, "cat"), (2, "car")), what="x") == [-1, 1, 0]
