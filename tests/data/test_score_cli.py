"""`adaseg score panoptic|semantic|instance`: results equal the Python API; bad input exits
non-zero naming the file and writes nothing."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
from click.testing import CliRunner

from adaseg.cli.main import main
from adaseg.eval.ap import instances_from_panoptic
from adaseg.eval.pq import pq_compute

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "eval"))
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
