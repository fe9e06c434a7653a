"""``coco-det:ROOT``: the reader against the JSON read by hand, box transforms against the
pixels they move, DETR's targets by hand, box AP against pycocotools' COCOeval on the file,
crowd boxes as COCOeval treats them, and the synthetic set's instances JSON against boxes
recomputed from its panoptic PNGs."""

from __future__ import annotations

import contextlib
import io
import json
import numpy as np
import pytest
import torch
from det_testing import ANNOTATIONS, CONTIGUOUS, IMAGES, instances, write_det
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from adaseg.data import DataError, build_dataset, collate
from adaseg.data.box_transforms import BoxTrainTransform
from adaseg.data.transforms import TrainTransform


def test_reader_matches_the_json_by_hand(tmp_path):
    root = write_det(tmp_path)
    ds = build_dataset(f"coco-det:{root}", "val")
    assert ds.meta.task == "detection" and ds.meta.name == "coco"
    assert ds.meta.class_names == ["person", "car", "kite"] and ds.meta.thing_ids == [0, 1, 2]
    assert len(ds) == 3  # the image without annotations is kept
    for i, (name, h, w) in enumerate(IMAGES):
        s = ds[i]
        # COCO eval resize by hand: shorter side 800, longer side at most 1333
        scale = min(800 / min(h, w), 1333 / max(h, w))
        oh, ow = round(h * scale), round(w * scale)
        assert s["image"].shape == (3, oh, ow) and s["orig_size"] == (h, w) and s["file_name"] == name
        assert s["image_id"] == i + 1
        want_boxes, want_labels = [], []
        for a in ANNOTATIONS:
            if a["image_id"] == i + 1 and not a["iscrowd"]:  # crowd: not a training target
                x, y, bw, bh = a["bbox"]
                want_boxes.append([x * ow / w, y * oh / h, (x + bw) * ow / w, (y + bh) * oh / h])
                want_labels.append(CONTIGUOUS[a["category_id"]])
        assert s["labels"].tolist() == want_labels
        assert s["boxes"].shape == (len(want_boxes), 4)
        if want_boxes:
            assert torch.allclose(s["boxes"], torch.tensor(want_boxes, dtype=torch.float32), atol=1e-4)
        image, anns = ds.instances_gt(i)
        assert image == {"id": i + 1, "height": h, "width": w}
        assert anns == [a for a in ANNOTATIONS if a["image_id"] == i + 1]  # crowd kept, unchanged


def test_plain_split_names_of_a_synth_folder(synth_root):
    ds = build_dataset(f"coco-det:{synth_root}", "val")
    assert ds.meta.name == "set" and ds.meta.task == "detection"
    assert ds[0]["image"].shape == (3, 64, 64)  # synthetic defaults: native size


def _white_box_image(h, w, box):
    img = np.zeros((3, h, w), np.float32)
    x0, y0, x1, y1 = box
    img[:, y0:y1, x0:x1] = 255.0
    return img


def test_box_transform_keeps_boxes_on_the_pixels():
    """A filled white box drawn in the image, moved by the train transform: its box recomputed
    from the output pixels (threshold at half intensity) is the transformed box to within a
    pixel; a box with no area left has no bright pixel left either."""
    t = BoxTrainTransform(target=(32, 48), crop=(24, 30), min_scale=0.6, max_scale=2.0)
    box = (9, 7, 35, 23)  # x0, y0, x1, y1 in a 40 x 60 image
    seen = {"flip": 0, "clipped": 0, "dropped": 0}
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        image, boxes, keep = t(_white_box_image(40, 60, box), np.array([box], np.float64), g)
        window = t.draw((40, 60), torch.Generator().manual_seed(seed))
        seen["flip"] += window.flip
        assert image.shape[1:] == window.crop and boxes.shape == (1, 4)
        bright = image[0] > 127.5
        if not keep[0]:
            seen["dropped"] += 1
            assert not bright.any(), seed
            continue
        x0, y0, x1, y1 = boxes[0]
        assert 0 <= x0 < x1 <= image.shape[2] and 0 <= y0 < y1 <= image.shape[1]
        full = np.array(box) * np.array([window.scaled[1] / 60, window.scaled[0] / 40] * 2)
        seen["clipped"] += not np.allclose([x1 - x0, y1 - y0], [full[2] - full[0], full[3] - full[1]])
        if min(x1 - x0, y1 - y0) < 1.5:
            continue  # a sliver thinner than a pixel may have no pixel above half intensity
        ys, xs = np.nonzero(bright)
        got = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert np.abs(np.array(got) - boxes[0]).max() <= 1.0, (seed, got, boxes[0])
    assert seen["flip"] and seen["clipped"] and seen["dropped"], seen


def test_box_and_segmentation_transforms_draw_alike():
    """Same seed, same image: the box transform's image is the segmentation transform's (one
    set of random draws, so a detection loader is deterministic from its seed as the others)."""
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, (3, 37, 53)).astype(np.float32)
    kw = dict(target=(32, 32), crop=(20, 24), min_scale=0.5, max_scale=1.5)
    for seed in range(5):
        a, _ = TrainTransform(**kw)(image, np.zeros((37, 53), np.int64), torch.Generator().manual_seed(seed))
        b, _, _ = BoxTrainTransform(**kw)(image, np.zeros((0, 4)), torch.Generator().manual_seed(seed))
        assert np.array_equal(a, b)


def test_train_loader_deterministic_and_collate_targets_by_hand(tmp_path):
    from adaseg.data import build_loader

    root = write_det(tmp_path)
    ds = build_dataset(f"coco-det:{root}", "train", train=True, size=32)
    batches = [next(iter(build_loader(ds, batch_size=3, shuffle=False, num_workers=0, seed=5))) for _ in range(2)]
    assert torch.equal(batches[0]["images"], batches[1]["images"])
    b = batches[0]
    for t in b["targets"]:  # DETR's target contract: normalised cxcywh with w, h > 0
        assert set(t) == {"labels", "boxes"} and t["boxes"].dtype == torch.float32
        assert bool((t["boxes"][:, 2:] > 0).all()) and bool((t["boxes"] >= 0).all() and (t["boxes"] <= 1).all())
    # collate's normalisation by hand on eval samples of two sizes
    ev = build_dataset(f"coco-det:{root}", "val", size=40)
    s0, s1 = ev[0], ev[1]
    batch = collate([s0, s1])
    for s, t in zip((s0, s1), batch["targets"]):
        _, h, w = s["image"].shape
        want = [[(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]
                for x0, y0, x1, y1 in s["boxes"].tolist()]
        assert torch.allclose(t["boxes"], torch.tensor(want, dtype=torch.float32).reshape(-1, 4), atol=1e-6)
        assert torch.equal(t["labels"], s["labels"])
    assert batch["padding_mask"].shape[1:] == batch["images"].shape[2:]


def _cocoeval(gt_path, results) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        ev = COCOeval(coco, coco.loadRes(results), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def _evaluate(ds, predictions):
    from adaseg.eval.scoring import Scorer
    from adaseg.eval.tasks.detection import DETECTION

    scorer = Scorer(ds, metric="box_ap50")
    records = [DETECTION.score(scorer, None, 0, i, predictions[i]) for i in range(len(ds))]
    return DETECTION.summarize(scorer, records).figures


def _prediction(rows):
    """rows of (x0, y0, x1, y1, score, contiguous label) -> a detection postprocess output."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    return {"boxes": torch.tensor(rows[:, :4]), "scores": torch.tensor(rows[:, 4]),
            "labels": torch.tensor(rows[:, 5], dtype=torch.int64)}


def test_box_ap_equals_cocoeval_on_the_json(tmp_path):
    root = write_det(tmp_path)
    ds = build_dataset(f"coco-det:{root}", "val")
    preds = [
        # image 1: the car nearly right, a detection on the crowd person box, the kite shifted
        _prediction([[5, 6, 24, 18, 0.9, 1], [31, 5, 54, 33, 0.95, 0], [42, 22, 60, 40, 0.6, 2],
                     [0, 0, 10, 10, 0.3, 2]]),
        # image 2: the big person, a wrong class on the small one, the small one found late
        _prediction([[0, 0, 36, 47, 0.8, 0], [10, 12, 18, 21, 0.7, 1], [11, 12, 18, 21, 0.2, 0]]),
        _prediction([[3, 3, 20, 20, 0.5, 0]]),  # a false positive on the empty image
    ]
    figures = _evaluate(ds, preds)
    results = [{"image_id": i + 1, "category_id": ds.meta.to_dataset_id(int(lab)),
                "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(s)}
               for i, p in enumerate(preds)
               for (x0, y0, x1, y1), s, lab in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist())]
    stats = _cocoeval(tmp_path / "annotations" / "instances_val2017.json", results)
    for key, want in zip(("AP_box", "AP50_box", "AP75_box", "APs_box", "APm_box", "APl_box"), stats[:6]):
        assert figures[key] == (None if want < 0 else pytest.approx(float(want), abs=1e-12)), key


def test_crowd_boxes_are_ignored_regions_as_in_cocoeval(tmp_path):
    """One person and one crowd-of-persons box; two detections on the crowd region score above
    the one on the person. COCOeval ignores detections matched to a crowd box (neither true
    nor false positives), so AP50 is 1 by hand, and equal to COCOeval's on the file. Were the
    crowd box a plain box, the second detection on it would be a false positive ranked above
    the person: AP50 < 1 (checked with COCOeval on that file)."""
    data = instances(images=[("a.png", 40, 60)], annotations=[
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2.0, 2.0, 10.0, 10.0], "area": 100.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [30.0, 5.0, 25.0, 30.0], "area": 750.0, "iscrowd": 1}])
    root = write_det(tmp_path, data)
    ds = build_dataset(f"coco-det:{root}", "val")
    assert ds[0]["labels"].tolist() == [0]  # training drops the crowd box
    pred = _prediction([[32, 7, 50, 30, 0.99, 0], [35, 10, 52, 33, 0.98, 0], [2, 2, 12, 12, 0.5, 0]])
    figures = _evaluate(ds, [pred])
    assert figures["AP50_box"] == pytest.approx(1.0)  # by hand: the crowd matches are ignored
    results = [{"image_id": 1, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": s}
               for (x0, y0, x1, y1), s in zip(pred["boxes"].tolist(), pred["scores"].tolist())]
    stats = _cocoeval(tmp_path / "annotations" / "instances_val2017.json", results)
    assert figures["AP_box"] == pytest.approx(float(stats[0]), abs=1e-12)
    # the crowd flag off: one object there, matched once; the other detection is a false positive
    plain = json.loads((tmp_path / "annotations" / "instances_val2017.json").read_text())
    plain["annotations"][1]["iscrowd"] = 0
    (tmp_path / "plain.json").write_text(json.dumps(plain))
    assert _cocoeval(tmp_path / "plain.json", results)[1] < 1.0


def test_synthetic_instances_json_matches_its_panoptic_pngs(synth_root):
    """``adaseg data synth`` writes instances_{split}.json; every box and area equals the one
    recomputed from the panoptic PNGs (adaseg.eval.ap.instances_from_panoptic), and pycocotools
    loads it."""
    import os

    from adaseg.eval.ap import instances_from_panoptic as from_pngs

    for split in ("train", "val"):
        path = os.path.join(synth_root, "annotations", f"instances_{split}.json")
        with open(path) as f:
            ours = json.load(f)
        ref = from_pngs(os.path.join(synth_root, "annotations", f"panoptic_{split}.json"),
                        os.path.join(synth_root, f"panoptic_{split}"))
        key = lambda a: (a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"])  # noqa: E731
        assert sorted(map(key, ours["annotations"])) == sorted(map(key, ref["annotations"]))
        assert [c["id"] for c in ours["categories"]] == [c["id"] for c in ref["categories"]]
        assert [i["id"] for i in ours["images"]] == [i["id"] for i in ref["images"]]
        with contextlib.redirect_stdout(io.StringIO()):
            assert len(COCO(path).getAnnIds()) == len(ours["annotations"])


@pytest.mark.parametrize("case, expect", [
    ("outside", "lies outside the 60x40 image"),
    ("negative", "negative width or height"),
    ("category", "unknown category_id 99"),
    ("malformed", "malformed JSON"),
    ("no_bbox", "lacks bbox"),
    ("no_iscrowd", "lacks iscrowd"),
    ("no_height", "positive integer 'height' and 'width'"),
    ("no_images", "no images"),
    ("missing_file", "missing on disk"),
    ("not_list", "missing or non-list 'annotations'"),
    ("id_type", "must be integers or strings"),
])
def test_bad_input_is_one_line(tmp_path, case, expect):
    data = instances()
    skip = ()
    if case == "outside":
        data["annotations"][0]["bbox"] = [50.0, 6.0, 20.0, 12.0]
    elif case == "negative":
        data["annotations"][0]["bbox"] = [5.0, 6.0, -2.0, 12.0]
    elif case == "category":
        data["annotations"][0]["category_id"] = 99
    elif case == "malformed":
        data = '{"images": [1, 2'
    elif case == "no_bbox":
        del data["annotations"][0]["bbox"]
    elif case == "no_iscrowd":
        del data["annotations"][1]["iscrowd"]
    elif case == "no_height":
        del data["images"][0]["height"]
    elif case == "no_images":
        data["images"], data["annotations"] = [], []
    elif case == "missing_file":
        skip = ("b.jpg",)
    elif case == "id_type":
        data["annotations"][0]["image_id"] = [1]
    elif case == "not_list":
        data["annotations"] = {"id": 1}
    root = write_det(tmp_path, data, skip_files=skip)
    with pytest.raises(DataError) as exc:
        build_dataset(f"coco-det:{root}", "val")
    assert expect in str(exc.value) and "\n" not in str(exc.value)


def test_empty_annotations_are_allowed(tmp_path):
    data = instances()
    data["annotations"] = []
    ds = build_dataset(f"coco-det:{write_det(tmp_path, data)}", "val")
    assert len(ds) == 3 and all(len(ds[i]["labels"]) == 0 for i in range(3))


def test_suite_refuses_pairs_nothing_can_score():
    from adaseg.eval.tasks.registry import suite_for

    assert suite_for("detection", "detection").metric == "box_ap50"
    with pytest.raises(DataError, match="cannot be trained or scored on detection data"):
        suite_for("panoptic", "detection")
    with pytest.raises(DataError, match="semantic data has no instances"):
        suite_for("detection", "semantic")
