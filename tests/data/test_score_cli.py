"""`adaseg score panoptic|semantic|instance`: results equal the Python API; bad input exits
non-zero naming the file and writes nothing."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from adaseg.cli.main import main
from adaseg.eval.ap import instances_from_panoptic
from adaseg.eval.pq import pq_compute

from panoptic_cases import make_cases, write_set  # noqa: E402


def _snapshot(root):
    return sorted((p, os.path.getsize(os.path.join(d, p))) for d, _, fs in os.walk(root) for p in fs)


@pytest.fixture()
def pan(tmp_path):
    gts, preds, _ = make_cases(21, 12)
    paths = {k: str(tmp_path / k) for k in ("gt", "pred")}
    write_set(paths["gt"], paths["gt"] + ".json", gts)
    write_set(paths["pred"], paths["pred"] + ".json", preds, images=False)
    return ["--gt-json", paths["gt"] + ".json", "--gt-dir", paths["gt"], "--pred-json", paths["pred"] + ".json",
            "--pred-dir", paths["pred"]], paths


def test_score_panoptic_json_equals_api(pan):
    args, p = pan
    res = CliRunner().invoke(main, ["score", "panoptic", *args, "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    ref = pq_compute(p["gt"] + ".json", p["pred"] + ".json", p["gt"], p["pred"])
    assert got["All"] == ref["All"] and got["Things"] == ref["Things"] and got["Stuff"] == ref["Stuff"]
    assert got["per_class"] == {str(k): v for k, v in ref["per_class"].items()}
    res = CliRunner().invoke(main, ["score", "panoptic", *args])
    assert res.exit_code == 0 and "All" in res.output and "Things" in res.output


@pytest.mark.parametrize("problem", ["missing_dir", "malformed", "png_id"])
def test_score_panoptic_bad_input(pan, tmp_path, problem):
    args, p = pan
    if problem == "missing_dir":
        shutil.rmtree(p["pred"])
        culprit = p["pred"]
    elif problem == "malformed":
        open(p["pred"] + ".json", "w").write("[1, 2")
        culprit = p["pred"] + ".json"
    else:
        data = json.load(open(p["pred"] + ".json"))
        ann = next(a for a in data["annotations"] if a["segments_info"])
        ann["segments_info"] = ann["segments_info"][1:]
        json.dump(data, open(p["pred"] + ".json", "w"))
        culprit = os.path.join(p["pred"], ann["file_name"])
    before = _snapshot(tmp_path)
    res = CliRunner().invoke(main, ["score", "panoptic", *args])
    assert res.exit_code == 1 and culprit in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert _snapshot(tmp_path) == before


def test_score_semantic(synth_root, tmp_path):
    gt = os.path.join(synth_root, "panoptic_semseg_val")
    pred = str(tmp_path / "pred")
    shutil.copytree(gt, pred)
    res = CliRunner().invoke(main, ["score", "semantic", "--gt-dir", gt, "--pred-dir", pred, "--data", synth_root,
                                    "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["mIoU"] == 1.0 and out["num_images"] == 5 and "sky" in out["per_class"]
    res = CliRunner().invoke(main, ["score", "semantic", "--gt-dir", gt, "--pred-dir", pred, "--num-classes", "3"])
    assert res.exit_code == 1 and "outside 0..2" in res.output
    res = CliRunner().invoke(main, ["score", "semantic", "--gt-dir", gt, "--pred-dir", pred, "--num-classes", "3",
                                    "--data", synth_root])
    assert res.exit_code == 2


def test_score_instance(synth_root, tmp_path):
    pj = os.path.join(synth_root, "annotations", "panoptic_val.json")
    pd = os.path.join(synth_root, "panoptic_val")
    inst = instances_from_panoptic(pj, pd)
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                "score": 0.9} for a in inst["annotations"] if not a["iscrowd"]]
    rj = tmp_path / "res.json"
    rj.write_text(json.dumps(results))
    res = CliRunner().invoke(main, ["score", "instance", "--pred-json", str(rj), "--panoptic-json", pj,
                                    "--panoptic-dir", pd, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["AP"] == pytest.approx(1.0)
    gj = tmp_path / "inst.json"
    gj.write_text(json.dumps(inst))
    res = CliRunner().invoke(main, ["score", "instance", "--pred-json", str(rj), "--gt-json", str(gj)])
    assert res.exit_code == 0 and "AP50" in res.output
    rj.write_text("{oops")
    res = CliRunner().invoke(main, ["score", "instance", "--pred-json", str(rj), "--gt-json", str(gj)])
    assert res.exit_code == 1 and str(rj) in res.output and "malformed JSON" in res.output
    res = CliRunner().invoke(main, ["score", "instance", "--pred-json", str(rj)])
    assert res.exit_code == 2


def test_score_panoptic_against_dataset_spec(synth_root, tmp_path):
    gt_json = os.path.join(synth_root, "annotations", "panoptic_val.json")
    pred_dir = str(tmp_path / "pred")
    shutil.copytree(os.path.join(synth_root, "panoptic_val"), pred_dir)
    res = CliRunner().invoke(main, ["score", "panoptic", "--data", synth_root, "--pred-json", gt_json,
                                    "--pred-dir", pred_dir, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["All"]["pq"] == 1.0
    res = CliRunner().invoke(main, ["score", "panoptic", "--data", synth_root, "--gt-json", gt_json,
                                    "--pred-json", gt_json, "--pred-dir", pred_dir])
    assert res.exit_code == 2
    res = CliRunner().invoke(main, ["score", "panoptic", "--data", f"ade20k:{tmp_path}", "--pred-json", gt_json,
                                    "--pred-dir", pred_dir])
    assert res.exit_code == 1 and "semantic only" in res.output


# ---- malformed inputs: one line naming the file (and the entry), exit 1, nothing written ----

from recipe_testing import invoke, snapshot  # noqa: E402


def _refused(root, args, *expect):
    """``adaseg score ARGS`` fails with exit 1 and one line holding every ``expect``; the files
    under ``root`` are byte-identical afterwards."""
    before = snapshot(root)
    res = invoke("score", *args)
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    for e in expect:
        assert e in lines[0], lines[0]
    assert snapshot(root) == before


def _edit(path, change):
    data = json.load(open(path))
    change(data)
    json.dump(data, open(path, "w"))


def _first_with_segments(data):
    return next(a for a in data["annotations"] if a["segments_info"])


def _extra_image(data):
    # a prediction for image 999, which the GT does not have (its PNG is a copy of image 0's)
    data["annotations"].append(dict(data["annotations"][0], image_id=999))


PANOPTIC_PRED_PROBLEMS = {
    "image absent from the GT": (_extra_image, "image_id 999, which"),
    "segment id 'abc'": (lambda d: _first_with_segments(d)["segments_info"][0].update(id="abc"),
                         "segment id 'abc' is not an integer"),
    "segment id true": (lambda d: _first_with_segments(d)["segments_info"][0].update(id=True),
                        "segment id True is not an integer"),
    "no segments_info": (lambda d: d["annotations"][1].pop("segments_info"), "has no 'segments_info'"),
    "segments_info not a list": (lambda d: d["annotations"][1].update(segments_info={"id": 1}),
                                 "segments_info must be a list"),
    "category_id '1' (a string)": (lambda d: _first_with_segments(d)["segments_info"][0].update(category_id="1"),
                                   "unknown category_id '1'"),
    "image twice": (lambda d: d["annotations"][2].update(image_id=d["annotations"][1]["image_id"]),
                    "has more than one annotation"),
    "image_id a list": (lambda d: d["annotations"][1].update(image_id=[1]), "image_id [1] is neither"),
    "file_name missing": (lambda d: d["annotations"][1].pop("file_name"), "has no 'file_name'"),
    "annotation not an object": (lambda d: d["annotations"].append(7), "annotation 7 is not an object"),
}


@pytest.mark.parametrize("problem", sorted(PANOPTIC_PRED_PROBLEMS))
def test_score_panoptic_refuses_malformed_predictions(pan, tmp_path, problem):
    args, p = pan
    change, expect = PANOPTIC_PRED_PROBLEMS[problem]
    _edit(p["pred"] + ".json", change)
    _refused(tmp_path, ["panoptic", *args], p["pred"] + ".json", expect)


PANOPTIC_GT_PROBLEMS = {
    "segment id 'abc'": (lambda d: _first_with_segments(d)["segments_info"][0].update(id="abc"), "segment id 'abc'"),
    "area 'big'": (lambda d: _first_with_segments(d)["segments_info"][0].update(area="big"), "area 'big'"),
    "negative area": (lambda d: _first_with_segments(d)["segments_info"][0].update(area=-3), "area -3"),
    "bbox of 3": (lambda d: _first_with_segments(d)["segments_info"][0].update(bbox=[1, 2, 3]), "bbox [1, 2, 3]"),
    "bbox text": (lambda d: _first_with_segments(d)["segments_info"][0].update(bbox="0,0,1,1"), "bbox 0,0,1,1"),
    "iscrowd 2": (lambda d: _first_with_segments(d)["segments_info"][0].update(iscrowd=2), "iscrowd 2"),
    "no segments_info": (lambda d: d["annotations"][0].pop("segments_info"), "has no 'segments_info'"),
    "image twice": (lambda d: d["annotations"][2].update(image_id=d["annotations"][1]["image_id"]),
                    "has more than one annotation"),
    "image id twice in images": (lambda d: d["images"][2].update(id=d["images"][1]["id"]), "listed twice"),
    "category id '1'": (lambda d: d["categories"][0].update(id="1"), "has id '1', not an integer"),
    "category twice": (lambda d: d["categories"].append(dict(d["categories"][0])), "listed twice"),
}


@pytest.mark.parametrize("problem", sorted(PANOPTIC_GT_PROBLEMS))
def test_score_panoptic_refuses_malformed_ground_truth(pan, tmp_path, problem):
    args, p = pan
    change, expect = PANOPTIC_GT_PROBLEMS[problem]
    _edit(p["gt"] + ".json", change)
    _refused(tmp_path, ["panoptic", *args], p["gt"] + ".json", expect)


def test_score_semantic_refuses_a_prediction_without_ground_truth(synth_root, tmp_path):
    gt = os.path.join(synth_root, "panoptic_semseg_val")
    pred = tmp_path / "pred"
    shutil.copytree(gt, pred)
    shutil.copy(pred / sorted(os.listdir(pred))[0], pred / "not_in_gt.png")
    _refused(tmp_path, ["semantic", "--gt-dir", gt, "--pred-dir", pred, "--num-classes", "9"],
             str(pred / "not_in_gt.png"), "does not have")


# A hand-built instances case: one 4x5 image, one thing of category 1 covering a 2x2 square.
_MASK = np.zeros((4, 5), dtype=np.uint8)
_MASK[1:3, 2:4] = 1


def _instances(tmp_path):
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(_MASK))
    rle = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    gt = {"images": [{"id": 1, "height": 4, "width": 5}],
          "categories": [{"id": 1, "name": "disc"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle, "area": 4.0,
                           "bbox": [2.0, 1.0, 2.0, 2.0], "iscrowd": 0}]}
    results = [{"image_id": 1, "category_id": 1, "segmentation": dict(rle), "score": 0.9}]
    return gt, results


def _write_instances(tmp_path, gt, results):
    gj, rj = tmp_path / "gt.json", tmp_path / "res.json"
    gj.write_text(json.dumps(gt))
    rj.write_text(json.dumps(results))
    return ["instance", "--gt-json", gj, "--pred-json", rj], str(gj), str(rj)


def test_score_instance_hand_case_is_exact(tmp_path):
    """The hand case scores AP 1 (the prediction is the GT mask); a prediction on the other
    pixels scores 0 -- so the checks below refuse malformed files, not good ones."""
    gt, results = _instances(tmp_path)
    args, _, _ = _write_instances(tmp_path, gt, results)
    res = invoke("score", *args, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["AP"] == pytest.approx(1.0)
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(1 - _MASK))
    results[0]["segmentation"] = {"size": [4, 5], "counts": rle["counts"].decode("ascii")}
    args, _, _ = _write_instances(tmp_path, gt, results)
    assert json.loads(invoke("score", *args, "--json").output)["AP"] == 0.0


RESULT_PROBLEMS = {
    "RLE counts garbage!!": (lambda r: r[0]["segmentation"].update(counts="garbage!!"),
                             "result 0 (image_id 1): RLE counts 'garbage!!'"),
    "RLE ending inside a count": (lambda r: r[0]["segmentation"].update(counts="0o"), "ends inside a run length"),
    "RLE covering too few pixels": (lambda r: r[0]["segmentation"].update(counts="1"), "cover 1 pixels, not the 4x5"),
    "RLE of another size": (lambda r: r[0]["segmentation"].update(size=[5, 4]), "differs from the image's"),
    "RLE counts a number": (lambda r: r[0]["segmentation"].update(counts=12), "RLE counts must be a string"),
    "polygon": (lambda r: r[0].update(segmentation=[[0, 0, 1, 0, 1, 1]]), "not an RLE object"),
    "score text": (lambda r: r[0].update(score="high"), "score 'high'"),
    "category_id '1'": (lambda r: r[0].update(category_id="1"), "category_id '1' is not a category"),
    "image_id true": (lambda r: r[0].update(image_id=True), "image_id True is not in"),
    "image_id absent from the GT": (lambda r: r[0].update(image_id=7), "image_id 7 is not in"),
    "bbox text": (lambda r: r[0].update(bbox="x"), "bbox x must be 4 numbers"),
    "bbox on the first result only": (lambda r: (r[0].update(bbox=[2, 1, 2, 2]), r.append(dict(r[0])),
                                                 r[1].pop("bbox")), "result 1 has no bbox"),
}


@pytest.mark.parametrize("problem", sorted(RESULT_PROBLEMS))
def test_score_instance_refuses_malformed_results(tmp_path, problem):
    gt, results = _instances(tmp_path)
    change, expect = RESULT_PROBLEMS[problem]
    change(results)
    args, _, rj = _write_instances(tmp_path, gt, results)
    _refused(tmp_path, args, rj, expect)


GT_PROBLEMS = {
    "image without height": (lambda g: g["images"][0].pop("height"), "needs integer height and width"),
    "image twice": (lambda g: g["images"].append(dict(g["images"][0])), "image id 1 is listed twice"),
    "area text": (lambda g: g["annotations"][0].update(area="4"), "area '4' must be a number"),
    "bbox of 3": (lambda g: g["annotations"][0].update(bbox=[1, 2, 3]), "bbox [1, 2, 3] must be 4 numbers"),
    "iscrowd 2": (lambda g: g["annotations"][0].update(iscrowd=2), "iscrowd 2 must be 0 or 1"),
    "annotation id text": (lambda g: g["annotations"][0].update(id="a"), "annotation ids must be unique integers"),
    "category_id text": (lambda g: g["annotations"][0].update(category_id="1"), "category_id '1' is not one"),
    "RLE counts garbage!!": (lambda g: g["annotations"][0]["segmentation"].update(counts="garbage!!"),
                             "annotation 1: RLE counts 'garbage!!'"),
    "negative run": (lambda g: g["annotations"][0]["segmentation"].update(counts=[25, -5]),
                     "are not all integers in 0..20"),
    "bad polygon": (lambda g: g["annotations"][0].update(segmentation=[[0, 0, 1]]), "polygon segmentation"),
}


@pytest.mark.parametrize("problem", sorted(GT_PROBLEMS))
def test_score_instance_refuses_malformed_ground_truth(tmp_path, problem):
    gt, results = _instances(tmp_path)
    change, expect = GT_PROBLEMS[problem]
    change(gt)
    args, gj, _ = _write_instances(tmp_path, gt, results)
    _refused(tmp_path, args, gj, expect)


def test_score_instance_from_a_panoptic_gt_without_image_sizes(pan, tmp_path):
    """COCOeval needs every image's height and width: taken from the GT PNGs when the panoptic
    JSON has no ``images`` sizes (this was a KeyError); a malformed panoptic GT is one line."""
    _, p = pan
    _edit(p["gt"] + ".json", lambda d: d.pop("images"))
    inst = instances_from_panoptic(p["gt"] + ".json", p["gt"])
    assert all(img["height"] == 24 and img["width"] == 32 for img in inst["images"])  # make_cases' size
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                "score": 0.9} for a in inst["annotations"] if not a["iscrowd"]]
    rj = tmp_path / "res.json"
    rj.write_text(json.dumps(results))
    args = ["instance", "--pred-json", rj, "--panoptic-json", p["gt"] + ".json", "--panoptic-dir", p["gt"]]
    res = invoke("score", *args, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["AP"] == pytest.approx(1.0)
    _edit(p["gt"] + ".json", lambda d: _first_with_segments(d)["segments_info"][0].update(id="abc"))
    _refused(tmp_path, args, p["gt"] + ".json", "segment id 'abc'")
