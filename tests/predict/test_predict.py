"""``adaseg predict`` and ``adaseg.Predictor`` on a tiny trained run: the val predictions score
the PQ ``adaseg eval`` reports (through cityscapesscripts' panopticapi code), the JSON is COCO
panoptic, the drawn pause map is the model's recorded pausing, CLI == Python API, bad inputs
are skipped and leave nothing behind."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from recipe_testing import invoke, invoke_json, refused, snapshot

import adaseg
from adaseg.data.panoptic_io import check_ids_match, check_panoptic_annotations, read_panoptic_png

# cityscapesscripts is the reference PQ implementation and an install requirement: a missing
# oracle fails, it is never skipped.
import cityscapesscripts.evaluation.evalPanopticSemanticLabeling as csp

ADAPTIVE = ("--gate", "latest", "--pause", "2:0.5")


def _predict(out: Path, *args: str):
    result = invoke("predict", "--out", out, "--threads", "1", *args)
    return result


def _val_gt(folder: str) -> tuple[str, str]:
    from adaseg.data.build import panoptic_gt_paths

    return panoptic_gt_paths(folder, "val")


@pytest.mark.parametrize("settings", [("--gate", "none"), ADAPTIVE], ids=["full", "gate+pause"])
def test_val_predictions_score_the_eval_pq(tmp_path, run, folder, settings):
    """predictions.json + PNGs for the val split, scored by cityscapesscripts' pq_compute, give
    exactly eval's PQ for the same settings (batch size 2 in both)."""
    out = tmp_path / "pred"
    result = _predict(out, "--run", run, "--data", folder, "--batch-size", "2", *settings)
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = invoke_json("eval", "--run", run, "--threads", "1", "--warmup", "0", "--timed", "1",
                         "--batch-size", "2", "--name", "predict_check_" + settings[1], *settings)
    gt_json, gt_dir = _val_gt(folder)
    ref = csp.evaluatePanoptic(gt_json, gt_dir, str(out / "predictions.json"), str(out / "panoptic"),
                               str(tmp_path / "csp.json"))
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            ours = report["metrics"][key.upper() + suffix]
            assert math.isclose(ref[group][key], ours, rel_tol=0, abs_tol=1e-12), (group, key)
    # `adaseg score panoptic` accepts the same files as they are
    done = invoke("score", "panoptic", "--pred-json", out / "predictions.json", "--pred-dir", out / "panoptic",
                  "--data", folder, "--json")
    assert done.exit_code == 0, done.output
    scored = json.loads(done.output)
    assert math.isclose(scored["All"]["pq"], report["metrics"]["PQ"], abs_tol=1e-12)
    # the exits written are the ones eval counted
    written = json.loads((out / "predictions.json").read_text())["annotations"]
    hist: dict[str, int] = {}
    for a in written:
        hist[str(a["exit"])] = hist.get(str(a["exit"]), 0) + 1
    assert hist == report["exits"]["histogram"]
    gflops = np.array([a["gflops"]["total"] for a in written])
    assert math.isclose(gflops.mean(), report["gflops"]["gflops"]["total"]["mean"], rel_tol=1e-9)


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, run, folder):
    out = tmp_path_factory.mktemp("pred") / "val"
    result = _predict(out, "--run", run, "--data", folder, *ADAPTIVE)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


def test_json_is_coco_panoptic_and_ids_match_the_pngs(predicted, folder):
    data = json.loads((predicted / "predictions.json").read_text())
    gt = json.loads(Path(_val_gt(folder)[0]).read_text())
    keys = ("id", "name", "isthing", "color")  # the dataset's own ids, names, colours
    assert [{k: c[k] for k in keys} for c in data["categories"]] == [{k: c[k] for k in keys} for c in gt["categories"]]
    cat_ids = {c["id"] for c in gt["categories"]}
    check_panoptic_annotations(data["annotations"], "predictions.json", cat_ids, gt=True)
    assert sorted(a["image_id"] for a in data["annotations"]) == sorted(i["id"] for i in gt["images"])
    for ann in data["annotations"]:
        png = predicted / "panoptic" / ann["file_name"]
        ids = read_panoptic_png(str(png))
        check_ids_match(ids, ann["segments_info"], str(png))
        size = next((i["height"], i["width"]) for i in gt["images"] if i["id"] == ann["image_id"])
        assert ids.shape == size
        for s in ann["segments_info"]:
            m = ids == s["id"]
            ys, xs = np.nonzero(m)
            assert s["area"] == int(m.sum()) and s["iscrowd"] == 0
            assert s["bbox"] == [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    summary = json.loads((predicted / "predict.json").read_text())
    import hashlib

    for rec in summary["images"]:
        for f in rec["files"].values():
            assert hashlib.sha256((predicted / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    assert summary["counts"] == {"predicted": 4, "skipped": 0}
    assert (predicted / "contact_sheet.png").is_file()


def test_pause_map_is_the_models_recorded_pausing(predicted, run, folder):
    """The positions drawn (pause grids) and written (compute/NAME.json) are exactly the paused
    tokens of an independent forward of the parent with the same gate and pause plan."""
    from adaseg.data import build_dataset, collate
    from adaseg.models.adaptive.settings import AdaptiveSettings

    model = adaseg.load_run(run, gate="latest")
    dataset = build_dataset(folder, "val")
    predictor = adaseg.Predictor(run, gate="latest", pause="2:0.5")
    preds = predictor.predict_dataset(dataset)
    for i, p in enumerate(preds):
        batch = collate([dataset[i]])
        with torch.no_grad():
            out = model(batch["images"], batch["padding_mask"], AdaptiveSettings(exits="gate", pause="2:0.5"))
        assert p.exit == int(out.exit_plan[0])
        recorded = {rec.layer: sorted(rec.positions[0].tolist()) for rec in out.paused if rec.rows.numel()}
        assert {s.layer: sorted(s.positions.tolist()) for s in p.paused} == recorded
        # what the picture draws: every cell marked with layer l is a recorded position of stage l
        starts = np.cumsum([0] + [h * w for h, w in p.token_shapes])
        drawn: dict[int, list[int]] = {}
        for level, grid in enumerate(p.pause_grids()):
            for flat in np.flatnonzero(grid):
                drawn.setdefault(int(grid.reshape(-1)[flat]), []).append(int(flat + starts[level]))
        assert {k: sorted(v) for k, v in drawn.items()} == recorded
        written = json.loads((predicted / "compute" / f"{p.name}.json").read_text())
        assert {s["layer"]: sorted(s["positions"]) for s in written["paused_positions"]} == recorded
        assert written["exit"] == p.exit and written["exit_source"] == "gate"
        if p.exit > 2:
            assert recorded, "an image running past layer 2 pauses tokens there"


def _user_images(tmp_path: Path, folder: str) -> Path:
    """A folder of the user's images: val PNGs, one as a grayscale JPEG in a sub-folder, one
    non-square, one with an EXIF rotation."""
    from adaseg.data.coco_panoptic import PanopticLayout

    src = sorted(p for p in Path(PanopticLayout(folder, "val").image_dir).iterdir() if p.is_file())
    user = tmp_path / "user"
    (user / "sub").mkdir(parents=True)
    shutil.copy(src[0], user / "a.png")
    Image.open(src[1]).convert("L").save(user / "sub" / "gray.jpg", quality=95)
    wide = Image.open(src[2]).convert("RGB").resize((90, 50))
    wide.save(user / "wide.png")
    im = Image.open(src[3]).convert("RGB")
    exif = im.getexif()
    exif[0x0112] = 8
    im.crop((0, 0, 64, 40)).save(user / "rotated.png", exif=exif.tobytes())
    return user


def test_cli_and_api_give_identical_outputs(tmp_path, run, folder):
    user = _user_images(tmp_path, folder)
    out = tmp_path / "out"
    result = _predict(out, "--run", run, user, *ADAPTIVE)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "gray.jpg" in result.output and "grayscale" in result.output  # one note
    predictor = adaseg.Predictor(run, gate="latest", pause="2:0.5")
    files = sorted(user.rglob("*.*"))
    preds = {p.source: p for p in predictor([str(f) for f in files])}
    summary = json.loads((out / "predict.json").read_text())
    anns = {a["image_id"]: a for a in json.loads((out / "predictions.json").read_text())["annotations"]}
    assert len(summary["images"]) == 4
    for rec in summary["images"]:
        p = preds[rec["source"]]
        ids = read_panoptic_png(str(out / rec["files"]["panoptic"]["path"]))
        assert np.array_equal(ids, p.panoptic)
        assert ids.shape == p.size == tuple(rec["size"])
        assert anns[rec["image_id"]]["segments_info"] == json.loads(json.dumps(p.segments))
        assert rec["exit"] == p.exit and rec["gflops"] == p.gflops
    sizes = {Path(r["source"]).name: tuple(r["size"]) for r in summary["images"]}
    assert sizes["wide.png"] == (50, 90)  # original size, any aspect
    assert sizes["rotated.png"] == (64, 40)  # the displayed (EXIF-rotated) size


def test_bad_inputs_are_skipped_and_leave_nothing(tmp_path, run, folder):
    user = _user_images(tmp_path, folder)
    good = (user / "a.png").read_bytes()
    (user / "truncated.png").write_bytes(good[: len(good) // 2])
    (user / "text.png").write_text("not an image")
    (user / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    result = _predict(out, "--run", run, user, "--gate", "none")
    assert result.exit_code == 0, result.output
    for name in ("truncated.png", "text.png", "empty.jpg"):
        lines = [line for line in result.output.splitlines() if name in line]
        assert len(lines) == 1 and lines[0].startswith("skipped"), result.output
    assert "4 images predicted, 3 skipped" in result.output
    stems = {p.stem for p in out.rglob("*") if p.is_file()}
    assert not stems & {"truncated", "text", "empty"}
    summary = json.loads((out / "predict.json").read_text())
    assert summary["counts"] == {"predicted": 4, "skipped": 3}
    # nothing predictable: exit 2, no output folder
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_text("no")
    result = _predict(tmp_path / "out2", "--run", run, bad)
    assert result.exit_code == 2 and "skipped" in result.output and "no image predicted" in result.output
    assert not (tmp_path / "out2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_existing_out_is_refused_unless_overwrite(tmp_path, run, folder):
    user = _user_images(tmp_path, folder)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    refused(out, "predict", "--run", run, user, "--out", out, expect="pass --overwrite")
    refused(out, "predict", "--run", run, user, "--out", out, "--overwrite", expect="did not write")
    (out / "mine.txt").unlink()
    assert _predict(out, "--run", run, user, "--gate", "none").exit_code == 0
    before = snapshot(out)
    refused(out, "predict", "--run", run, user, "--out", out, expect="pass --overwrite")
    assert _predict(out, "--run", run, user / "a.png", "--gate", "none", "--overwrite").exit_code == 0
    assert snapshot(out) != before and len(json.loads((out / "predict.json").read_text())["images"]) == 1


@pytest.mark.parametrize("args,expect", [
    (("--exit", "3", "--gate", "latest"), "exclusive"),
    (("--pause", "6:0.5", "--gate", "none"), "below the encoder depth"),
    (("--pause-mode", "random"), "needs --pause"),
    (("--split", "train"), "needs --data and no INPUT"),
])
def test_misuse_is_refused(tmp_path, run, folder, args, expect):
    user = _user_images(tmp_path, folder)
    refused(tmp_path, "predict", "--run", run, user, "--out", tmp_path / "o", *args, expect=expect)


def test_loading_a_run_does_not_import_training_steps(run):
    code = ("import sys, adaseg; p = adaseg.Predictor(sys.argv[1], gate='latest', pause='2:0.5'); "
            "bad = [m for m in sys.modules if m.startswith(('adaseg.engine.fit_gate', 'adaseg.engine.train_parent', "
            "'adaseg.engine.derive', 'adaseg.engine.gate_targets', 'adaseg.engine.evaluate'))]; print(bad); assert not bad")
    done = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_unreadable_dataset_image_is_skipped(tmp_path, run, folder):
    from adaseg.data.coco_panoptic import PanopticLayout

    copy = tmp_path / "data"
    shutil.copytree(folder, copy)
    images = sorted(p for p in Path(PanopticLayout(str(copy), "val").image_dir).iterdir() if p.is_file())
    images[1].write_bytes(images[1].read_bytes()[:200])
    out = tmp_path / "out"
    result = _predict(out, "--run", run, "--data", copy, "--batch-size", "2", "--gate", "none")
    assert result.exit_code == 0, result.output
    assert [line for line in result.output.splitlines() if line.startswith("skipped")] == \
        [line for line in result.output.splitlines() if images[1].name in line]
    assert json.loads((out / "predict.json").read_text())["counts"] == {"predicted": 3, "skipped": 1}
    assert not list(out.rglob(images[1].stem + ".*"))
