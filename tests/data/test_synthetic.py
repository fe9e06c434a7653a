"""The synthetic generator: COCO-panoptic validity, determinism, difficulty, atomic writes, cache."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr

from adaseg.data.panoptic_io import check_ids_match, check_panoptic_json, read_panoptic_png
from adaseg.data.synthetic import cache as synth_cache
from adaseg.data.synthetic import generate as synth_gen
from adaseg.data.synthetic.scene import THINGS, make_scene


def _tree(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def test_files_are_valid_coco_panoptic(synth_root):
    for split, n in (("train", 6), ("val", 5)):
        path = os.path.join(synth_root, "annotations", f"panoptic_{split}.json")
        data = json.load(open(path))
        check_panoptic_json(data, path)
        assert len(data["images"]) == len(data["annotations"]) == n
        cats = {c["id"]: c for c in data["categories"]}
        lut = {cid: i for i, cid in enumerate(sorted(cats))}
        for img, ann in zip(data["images"], data["annotations"]):
            assert 0.0 <= img["difficulty"] <= 1.0
            ids = read_panoptic_png(os.path.join(synth_root, f"panoptic_{split}", ann["file_name"]))
            check_ids_match(ids, ann["segments_info"], ann["file_name"])
            rgb = np.asarray(Image.open(os.path.join(synth_root, split, img["file_name"])))
            assert rgb.shape == (64, 64, 3) and ids.shape == (64, 64)
            sem = np.asarray(Image.open(os.path.join(synth_root, f"panoptic_semseg_{split}", ann["file_name"])))
            for s in ann["segments_info"]:
                m = ids == s["id"]
                ys, xs = np.nonzero(m)
                assert s["area"] == m.sum()
                assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                assert (sem[m] == lut[s["category_id"]]).all()
            assert (sem[ids == 0] == 255).all()


def test_scene_deterministic_and_difficulty_drives_content():
    a = make_scene(5, 17, 96)
    b = make_scene(5, 17, 96)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2] and a[3] == b[3]
    assert not np.array_equal(make_scene(6, 17, 96)[0], a[0])
    diffs, n_things, mean_area, crowd = [], [], [], 0
    thing_ids = {t[0] for t in THINGS}
    for i in range(80):
        _, _, segs, d = make_scene(0, i, 96)
        things = [s for s in segs if s["category_id"] in thing_ids and not s["iscrowd"]]
        crowd += sum(s["iscrowd"] for s in segs)
        diffs.append(d)
        n_things.append(len(things))
        mean_area.append(np.mean([s["area"] for s in things]) if things else 0.0)
    assert min(diffs) < 0.1 and max(diffs) > 0.9
    assert spearmanr(diffs, n_things)[0] > 0.6  # harder -> more objects
    assert spearmanr(diffs, mean_area)[0] < -0.6  # harder -> smaller objects
    assert min(n_things) >= 1 and max(n_things) >= 8
    assert crowd >= 1


def test_write_is_deterministic_across_worker_counts(tmp_path):
    a = synth_gen.write_synthetic(str(tmp_path / "a"), n_train=3, n_val=2, size=48, seed=1, workers=1)
    b = synth_gen.write_synthetic(str(tmp_path / "b"), n_train=3, n_val=2, size=48, seed=1, workers=2)
    assert _tree(a) == _tree(b)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    real = synth_gen.make_scene

    def failing(seed, index, size):
        if index == 2:
            raise RuntimeError("interrupted")
        return real(seed, index, size)

    monkeypatch.setattr(synth_gen, "make_scene", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        synth_gen.write_synthetic(str(tmp_path / "out"), n_train=4, n_val=1, size=32, workers=1)
    assert os.listdir(tmp_path) == []


def test_refuses_existing_output(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        synth_gen.write_synthetic(str(tmp_path / "out"), n_train=1, n_val=1, size=32)


def test_cache_generates_once(tmp_path, monkeypatch):
    monkeypatch.setenv("ADASEG_CACHE", str(tmp_path / "c"))
    p1 = synth_cache.synthetic_root(n_train=2, n_val=1, size=32, seed=0)
    assert os.path.isfile(os.path.join(p1, "annotations", "panoptic_val.json"))

    def boom(*a, **k):
        raise AssertionError("regenerated a cached set")

    monkeypatch.setattr(synth_cache, "write_synthetic", boom)
    assert synth_cache.synthetic_root(n_train=2, n_val=1, size=32, seed=0) == p1
    assert sorted(os.listdir(tmp_path / "c")) == [os.path.basename(p1)]


@pytest.mark.parametrize("kind", ["disc", "box", "triangle", "ring", "cross"])
def test_windowed_shape_equals_full_frame(kind):
    from adaseg.data.synthetic.draw import shape_mask, shape_mask_full

    yy, xx = np.mgrid[0:50, 0:60].astype(np.float64)
    for k in range(20):
        p = np.random.default_rng(k)
        cy, cx, r, th = p.uniform(-10, 60), p.uniform(-10, 70), p.uniform(1, 25), p.uniform(0, 7)
        a = shape_mask(kind, yy, xx, cy=cy, cx=cx, r=r, theta=th, rng=np.random.default_rng(k))
        b = shape_mask_full(kind, yy, xx, cy=cy, cx=cx, r=r, theta=th, rng=np.random.default_rng(k))
        assert np.array_equal(a, b)
