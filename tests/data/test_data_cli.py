"""Bad input: each problem gives one clear error naming the file, a non-zero exit through
the CLI, and nothing written. Also `adaseg data synth` / `info` / `speed` happy paths."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from adaseg.cli.main import main
from adaseg.data import DataError, build_dataset
from adaseg.data.panoptic_io import id2rgb


def _snapshot(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[p] = os.path.getmtime(p), os.path.getsize(p)
    return out


def _break(root: str, problem: str) -> str:
    """Damage a copy of the synthetic folder; returns the file the error must name."""
    js = os.path.join(root, "annotations", "panoptic_val.json")
    data = json.load(open(js))
    ann = data["annotations"][1]
    png = os.path.join(root, "panoptic_val", ann["file_name"])
    if problem == "missing_json":
        os.remove(js)
        return js
    if problem == "malformed_json":
        open(js, "w").write('{"images": [')
        return js
    if problem == "missing_png":
        os.remove(png)
        return png
    if problem == "missing_image":
        os.remove(os.path.join(root, "val", data["images"][1]["file_name"]))
        return os.path.join(root, "val", data["images"][1]["file_name"])
    if problem == "png_id_not_in_json":
        ann["segments_info"] = ann["segments_info"][1:]
        json.dump(data, open(js, "w"))
        return png
    if problem == "json_id_not_in_png":
        ann["segments_info"].append({"id": 4242, "category_id": 1, "iscrowd": 0, "area": 1, "bbox": [0, 0, 1, 1]})
        json.dump(data, open(js, "w"))
        return png
    if problem == "unknown_category":
        ann["segments_info"][0]["category_id"] = 999
        json.dump(data, open(js, "w"))
        return js
    if problem == "size_mismatch":
        ids = np.zeros((10, 10), np.int64)
        Image.fromarray(id2rgb(ids)).save(png)
        ann["segments_info"] = []
        json.dump(data, open(js, "w"))
        return png
    if problem == "empty":
        data["annotations"] = []
        json.dump(data, open(js, "w"))
        return js
    raise AssertionError(problem)


PROBLEMS = ["missing_json", "malformed_json", "missing_png", "missing_image", "png_id_not_in_json",
            "json_id_not_in_png", "unknown_category", "size_mismatch", "empty"]
MESSAGES = {"missing_json": "not found", "malformed_json": "malformed JSON", "missing_png": "not found",
            "missing_image": "image file not found", "png_id_not_in_json": "in the PNG but not in the JSON",
            "json_id_not_in_png": "in the JSON but not in the PNG", "unknown_category": "unknown category_id 999",
            "size_mismatch": "differs from image", "empty": "empty dataset"}


@pytest.mark.parametrize("problem", PROBLEMS)
def test_check_reports_problem_and_fails(synth_root, tmp_path, problem):
    root = str(tmp_path / "broken")
    shutil.copytree(synth_root, root)
    culprit = _break(root, problem)
    before = _snapshot(tmp_path)
    res = CliRunner().invoke(main, ["data", "check", root, "--split", "val"], terminal_width=400)
    assert res.exit_code == 1, res.output
    flat = " ".join(res.output.split())
    assert MESSAGES[problem] in flat and os.path.basename(culprit) in flat
    assert "1 problem(s) found" in flat
    assert _snapshot(tmp_path) == before  # nothing written


@pytest.mark.parametrize("problem", ["missing_png", "png_id_not_in_json", "json_id_not_in_png", "size_mismatch"])
def test_loader_raises_one_line_naming_the_file(synth_root, tmp_path, problem):
    root = str(tmp_path / "broken")
    shutil.copytree(synth_root, root)
    culprit = _break(root, problem)
    ds = build_dataset(root, "val")
    ds[0]
    with pytest.raises(DataError) as exc:
        ds[1]
    assert culprit in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_spec_and_missing_root(tmp_path):
    for args in (["data", "check", "nonsense-spec"], ["data", "info", f"coco:{tmp_path}/nope"],
                 ["data", "info", "cityscapes:"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code != 0 and "Error:" in res.output, res.output
    assert os.listdir(tmp_path) == []


def test_synth_info_check_speed(tmp_path):
    out = str(tmp_path / "s")
    runner = CliRunner()
    res = runner.invoke(main, ["data", "synth", "--out", out, "--n-train", "3", "--n-val", "2", "--size", "48",
                               "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(out)) == ["annotations", "panoptic_semseg_train", "panoptic_semseg_val",
                                       "panoptic_train", "panoptic_val", "synthetic.json", "train", "val"]
    res = runner.invoke(main, ["data", "synth", "--out", out])
    assert res.exit_code == 2 and "already exists" in res.output
    res = runner.invoke(main, ["data", "check", out])
    assert res.exit_code == 0 and "no problems" in res.output, res.output
    res = runner.invoke(main, ["data", "info", out], terminal_width=200)
    assert res.exit_code == 0 and "triangle" in res.output and "difficulty" in res.output
    res = runner.invoke(main, ["data", "speed", out, "--workers", "0", "--batch-size", "1", "--batches", "2"])
    assert res.exit_code == 0 and "images/s" in res.output, res.output
    res = runner.invoke(main, ["data", "synth", "--out", str(tmp_path / "t"), "--size", "8"])
    assert res.exit_code == 2 and not os.path.exists(tmp_path / "t")


@pytest.mark.parametrize("problem", ["missing_label", "bad_value", "no_images"])
def test_ade20k_bad_input(tmp_path, problem):
    for sub in ("images/validation", "annotations/validation"):
        (tmp_path / sub).mkdir(parents=True)
    if problem != "no_images":
        Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "images/validation/a.jpg")
    if problem == "bad_value":
        Image.fromarray(np.full((6, 6), 200, np.uint8)).save(tmp_path / "annotations/validation/a.png")
    expect = {"missing_label": "annotation missing", "bad_value": "label value 200",
              "no_images": "no images"}[problem]
    before = _snapshot(tmp_path)
    res = CliRunner().invoke(main, ["data", "check", f"ade20k:{tmp_path}", "--split", "val"])
    assert res.exit_code == 1 and expect in res.output, res.output
    assert _snapshot(tmp_path) == before
