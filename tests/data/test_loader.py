"""Datasets, transforms, collation and the loader on synthetic, COCO-, Cityscapes- and
ADE20K-shaped folders (Cityscapes GT made by cityscapesscripts' own converter)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from adaseg.data import build_dataset, build_loader, collate
from adaseg.data.panoptic_io import id2rgb, read_panoptic_png
from adaseg.data.transforms import TrainTransform, denormalize, resize_nearest


def test_synthetic_sample_contract(synth_root):
    ds = build_dataset(synth_root, "val")
    meta = ds.meta
    assert meta.name == "set" and meta.task == "panoptic" and meta.num_classes == 9
    assert meta.thing_ids == [0, 1, 2, 3, 4] and meta.stuff_ids == [5, 6, 7, 8]
    assert meta.to_contiguous(10) == 5 and meta.to_dataset_id(5) == 10 and meta.ignore_label == 255
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].dtype == torch.float32 and s["image"].shape == (3, 64, 64)
        assert s["masks"].dtype == torch.bool and s["masks"].shape[1:] == (64, 64)
        assert s["labels"].dtype == torch.int64 and len(s["labels"]) == len(s["masks"])
        assert s["semantic"].dtype == torch.int64 and s["orig_size"] == (64, 64)
        assert 0.0 <= s["difficulty"] <= 1.0
        # image is the PNG, normalised
        png = np.array(Image.open(os.path.join(synth_root, "val", s["file_name"])))
        assert torch.allclose(denormalize(s["image"]), torch.from_numpy(png).permute(2, 0, 1).float(), atol=1e-3)
        # masks are disjoint and agree with the semantic map
        assert s["masks"].sum(0).max() <= 1
        for m, lab in zip(s["masks"], s["labels"]):
            assert (s["semantic"][m] == lab).all()
        # panoptic GT at original resolution is the PNG and its segments
        ids, segs = ds.panoptic_gt(i)
        assert np.array_equal(ids, read_panoptic_png(os.path.join(synth_root, "panoptic_val", s["file_name"])))
        non_crowd = [x for x in segs if not x["iscrowd"]]
        assert len(non_crowd) == len(s["masks"])
        crowd_px = np.isin(ids, [x["id"] for x in segs if x["iscrowd"]])
        covered = s["masks"].any(0).numpy()
        assert ((s["semantic"].numpy() == 255) == (ids == 0)).all()
        assert (covered | crowd_px | (ids == 0)).all()


def test_builtin_spec_generates_into_cache(tmp_path):
    ds = build_dataset("synthetic", "val", synthetic={"n_train": 1, "n_val": 2, "size": 48, "seed": 0})
    assert ds.meta.name == "synthetic" and len(ds) == 2 and ds[0]["image"].shape == (3, 48, 48)
    assert os.listdir(tmp_path / "cache")[0].startswith("synthetic-v")


def test_resize_nearest_matches_pil():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 2**24, size=(13, 17))
    for size in ((26, 34), (7, 9), (13, 40), (5, 17)):
        ours = resize_nearest(ids, size)
        pil = np.asarray(Image.fromarray(ids.astype(np.int32), mode="I").resize(size[::-1], Image.NEAREST))
        assert np.array_equal(ours, pil), size


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_train_transform_keeps_image_and_labels_aligned(seed):
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.repeat(rng.integers(1, 200, size=(6, 8)), 8, 0), 8, 1)  # 48x64 blocks
    image = np.repeat(ids[None].astype(np.float32), 3, 0)  # colour = id
    g = torch.Generator().manual_seed(seed)
    tf = TrainTransform(target=(48, 64), crop=(40, 40), min_scale=2.0, max_scale=2.0, flip_prob=0.5)
    img2, ids2 = tf(image, ids, g)
    img2, ids2 = torch.from_numpy(img2), torch.from_numpy(ids2)
    assert img2.shape[1:] == ids2.shape == (40, 40)
    # away from block edges bilinear interpolation of a constant block is exact
    pad = torch.nn.functional.pad(ids2[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0]
    windows = pad.unfold(0, 3, 1).unfold(1, 3, 1)
    flat = (windows.amax((-1, -2)) == windows.amin((-1, -2)))
    flat[0, :] = flat[-1, :] = flat[:, 0] = flat[:, -1] = False  # neighbours cut off by the crop
    assert flat.sum() > 100
    assert torch.allclose(img2[0][flat], ids2[flat].float(), atol=1e-3)


def test_train_dataset_and_collate(synth_root):
    ds = build_dataset(synth_root, "train", train=True)
    batch = collate([ds[i] for i in range(4)])
    b, _, hp, wp = batch["images"].shape
    assert b == 4 and hp % 32 == 0 and wp % 32 == 0
    for i, (h, w) in enumerate(batch["sizes"]):
        assert not batch["padding_mask"][i, :h, :w].any() and batch["padding_mask"][i, h:, :].all()
        assert (batch["images"][i, :, h:, :] == 0).all()
        t = batch["targets"][i]
        assert (t["semantic"][h:, :] == 255).all() and (t["semantic"][:, w:] == 255).all()
        assert not t["masks"][:, h:, :].any() and t["masks"].shape[1:] == (hp, wp)
        for m, lab in zip(t["masks"], t["labels"]):
            assert m.any() and (t["semantic"][m] == lab).all()
    assert batch["orig_sizes"] == [(64, 64)] * 4 and len(batch["difficulty"]) == 4


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_deterministic_from_seed(synth_root, workers):
    ds = build_dataset(synth_root, "train", train=True)
    runs = []
    for _ in range(2):
        loader = build_loader(ds, batch_size=3, shuffle=True, num_workers=workers, seed=7)
        runs.append([(b["image_ids"], b["images"].sum().item()) for b in loader])
    assert runs[0] == runs[1] and len(runs[0]) == 2
    other = build_loader(ds, batch_size=3, shuffle=True, num_workers=workers, seed=8)
    assert [(b["image_ids"], b["images"].sum().item()) for b in other] != runs[0]


def test_loader_workers_start_methods_agree(synth_root):
    ds = build_dataset(synth_root, "train", train=True)
    runs = []
    for ctx in ("fork", "spawn"):
        loader = build_loader(ds, batch_size=3, shuffle=True, num_workers=1, seed=3, multiprocessing_context=ctx)
        runs.append([(b["image_ids"], b["images"].sum().item()) for b in loader])
    assert runs[0] == runs[1]


def _coco_like(root, split, items, categories):
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    for sub in (split, f"panoptic_{split}"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    anns, imgs = [], []
    for k, (ids, segs) in enumerate(items):
        Image.fromarray(id2rgb(ids)).save(os.path.join(root, f"panoptic_{split}", f"{k}.png"))
        Image.fromarray(np.full(ids.shape + (3,), 100, np.uint8)).save(os.path.join(root, split, f"{k}.jpg"))
        anns.append({"image_id": k, "file_name": f"{k}.png", "segments_info": segs})
        imgs.append({"id": k, "file_name": f"{k}.jpg", "height": ids.shape[0], "width": ids.shape[1]})
    with open(os.path.join(root, "annotations", f"panoptic_{split}.json"), "w") as f:
        json.dump({"images": imgs, "annotations": anns, "categories": categories}, f)


def test_coco_spec_layout_and_eval_resize(tmp_path):
    ids = np.zeros((30, 40), np.int64)
    ids[:, :20], ids[5:10, 25:35] = 500, 77
    segs = [{"id": 500, "category_id": 184, "iscrowd": 0, "area": 600},
            {"id": 77, "category_id": 1, "iscrowd": 1, "area": 50}]
    cats = [{"id": 184, "name": "tree", "isthing": 0}, {"id": 1, "name": "person", "isthing": 1}]
    _coco_like(str(tmp_path), "val2017", [(ids, segs)], cats)
    ds = build_dataset(f"coco:{tmp_path}", "val")
    assert ds.meta.name == "coco" and ds.meta.class_names == ["person", "tree"]
    s = ds[0]
    assert s["image"].shape == (3, 800, 1067) and s["orig_size"] == (30, 40)
    assert s["labels"].tolist() == [1] and s["masks"].shape == (1, 800, 1067)  # crowd has no mask
    assert set(s["semantic"].unique().tolist()) == {0, 1, 255}  # crowd keeps its class in semantic
    assert build_dataset(f"coco:{tmp_path}", "val", size=60)[0]["image"].shape == (3, 60, 80)


def test_cityscapes_from_cityscapesscripts_converter(tmp_path):
    import cityscapesscripts.preparation.createPanopticImgs as prep  # an install requirement: never skipped
    from cityscapesscripts.helpers.labels import name2label

    root = tmp_path / "cs"
    (root / "gtFine" / "val" / "aachen").mkdir(parents=True)
    (root / "leftImg8bit" / "val" / "aachen").mkdir(parents=True)
    inst = np.full((16, 32), name2label["road"].id, np.uint16)
    inst[:4] = name2label["sky"].id
    inst[8:12, 2:8] = name2label["car"].id * 1000 + 0
    inst[8:12, 10:16] = name2label["car"].id * 1000 + 1
    inst[12:, 20:] = name2label["person"].id  # crowd (no instance id)
    inst[0, 0] = name2label["ego vehicle"].id  # ignored in eval -> void
    stem = "aachen_000000_000019"
    Image.fromarray(inst).save(root / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_instanceIds.png")
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(root / "leftImg8bit" / "val" / "aachen" /
                                                          f"{stem}_leftImg8bit.png")
    prep.convert2panoptic(str(root / "gtFine"), str(root / "gtFine"), setNames=["val"])
    ds = build_dataset(f"cityscapes:{root}", "val")
    assert ds.meta.num_classes == 19 and ds.meta.class_names[0] == "road"
    s = ds[0]
    train = {name: name2label[name].trainId for name in ("road", "sky", "car", "person")}
    assert s["semantic"][0, 0] == 255 and s["semantic"][1, 1] == train["sky"]
    assert s["semantic"][14, 25] == train["person"] and s["semantic"][15, 0] == train["road"]
    assert sorted(s["labels"].tolist()) == sorted([train["road"], train["sky"], train["car"], train["car"]])
    ids, segs = ds.panoptic_gt(0)
    assert ids.shape == (16, 32) and sum(x["iscrowd"] for x in segs) == 1


def test_ade20k_semantic(tmp_path):
    for sub in ("images/validation", "annotations/validation"):
        (tmp_path / sub).mkdir(parents=True)
    lab = np.zeros((10, 12), np.uint8)
    lab[:5] = 1
    lab[5:, :6] = 150
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "images/validation/a.jpg")
    Image.fromarray(lab).save(tmp_path / "annotations/validation/a.png")
    (tmp_path / "objectInfo150.txt").write_text("Idx\tRatio\tTrain\tVal\tName\n1\t0.1\t1\t1\twall\n")
    ds = build_dataset(f"ade20k:{tmp_path}", "val", size=10)
    assert ds.meta.task == "semantic" and ds.meta.num_classes == 150 and ds.meta.class_names[0] == "wall"
    s = ds[0]
    assert s["orig_size"] == (10, 12) and s["semantic"].shape == (10, 12)
    assert s["semantic"][0, 0] == 0 and s["semantic"][9, 0] == 149 and s["semantic"][9, 11] == 255
    assert sorted(s["labels"].tolist()) == [0, 149]
    ids, segs = ds.panoptic_gt(0)
    assert {x["category_id"] for x in segs} == {1, 150} and all(x["iscrowd"] == 0 for x in segs)


@pytest.mark.parametrize("shape,target,crop,scale", [((48, 64), (48, 64), (40, 40), (0.5, 0.5)),
                                                     ((30, 90), (64, 64), (32, 48), (1.0, 1.0)),
                                                     ((100, 50), (100, 100), (100, 100), (2.0, 2.0))])
def test_train_transform_output_size(shape, target, crop, scale):
    h, w = shape
    s = scale[0] * min(target[0] / h, target[1] / w)
    expect = (min(crop[0], round(h * s)), min(crop[1], round(w * s)))
    tf = TrainTransform(target=target, crop=crop, min_scale=scale[0], max_scale=scale[1], flip_prob=0.0)
    img, ids = tf(np.zeros((3, h, w), np.float32), np.zeros((h, w), np.int64), torch.Generator().manual_seed(0))
    assert tuple(ids.shape) == expect and tuple(img.shape[1:]) == expect


def test_eval_transform_shorter_side_and_cap():
    from adaseg.data.transforms import EvalTransform

    img, ids = EvalTransform(short=800, max_size=1333)(np.zeros((3, 480, 640), np.float32),
                                                      np.zeros((480, 640), np.int64))
    assert tuple(ids.shape) == (800, 1067) and img.shape[1:] == ids.shape
    _, ids = EvalTransform(short=800, max_size=1333)(np.zeros((3, 100, 400), np.float32), np.zeros((100, 400), np.int64))
    assert tuple(ids.shape) == (333, 1333)
