"""``--data coco-det:ROOT`` through the commands: DETR trains, derives and evaluates on a COCO
detection folder (the synthetic set's instances JSON), eval's box AP equals pycocotools'
COCOeval on that JSON file with detections from forwards made here; bad data and models that
cannot use the data are refused in one line with nothing written."""

from __future__ import annotations

import contextlib
import io
import json
import os

import pytest
import torch
from det_testing import instances, write_det
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from recipe_testing import TRAIN_FAST, invoke_json, refused, write_folder

from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.runs.run_dir import RunDir


@pytest.fixture(scope="module")
def det_run(tmp_path_factory):
    folder = write_folder(tmp_path_factory.mktemp("data") / "synth")
    root = tmp_path_factory.mktemp("runs") / "detr"
    invoke_json("train-parent", "--model", "detr_tiny", "--data", f"coco-det:{folder}", *TRAIN_FAST, "--run", root)
    return RunDir(root), folder


def test_derive_scores_box_ap50_on_detection_data(det_run):
    from adaseg.runs.derived import DerivedDataset

    rd, _ = det_run
    out = invoke_json("derive", "--run", rd.root, "--threads", "1")
    derived = DerivedDataset.load(rd.derived_path)
    assert derived.metric == "box_ap50" and derived.num_images == 8, out


def test_eval_box_ap_equals_cocoeval_on_the_instances_json(det_run, tmp_path):
    from adaseg.data import build_dataset, collate
    from adaseg.runs.parent import load_parent

    rd, folder = det_run
    report = invoke_json("eval", "--run", rd.root, "--exit", "4", "--batch-size", "2", "--warmup", "0",
                         "--timed", "1", "--threads", "1", "--gate", "none")
    m = report["metrics"]
    assert report["info"]["metric"] == "box_ap50"
    model, _ = load_parent(rd.parent_path)
    dataset = build_dataset(f"coco-det:{folder}", "val")
    results = []
    for i in range(len(dataset)):
        batch = collate([dataset[i]])
        with torch.no_grad():
            out = model(batch["images"], batch["padding_mask"], AdaptiveSettings(exits=4))
        (p,) = model.postprocess(out, batch["sizes"], output_sizes=batch["orig_sizes"])
        for (x0, y0, x1, y1), s, lab in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            results.append({"image_id": dataset.records[i].image_id, "category_id": dataset.meta.to_dataset_id(lab),
                            "bbox": [x0, y0, x1 - x0, y1 - y0], "score": s})
    (tmp_path / "dt.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(os.path.join(folder, "annotations", "instances_val.json"))  # the file itself
        ev = COCOeval(coco, coco.loadRes(str(tmp_path / "dt.json")), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for key, want in zip(("AP_box", "AP50_box", "AP75_box", "APs_box", "APm_box", "APl_box"), ev.stats[:6]):
        assert m[key] == (None if want < 0 else pytest.approx(float(want), abs=1e-4)), key


def test_eval_on_panoptic_data_of_a_detection_run_is_refused(det_run):
    rd, folder = det_run
    refused(rd.root, "eval", "--run", rd.root, "--data", folder, "--exit", "4", "--threads", "1", "--gate", "none",
            expect="other classes than the run's dataset")


def test_segmentation_model_on_detection_data_is_refused(tmp_path, det_run):
    _, folder = det_run
    root = tmp_path / "m2f"
    refused(root, "train-parent", "--model", "m2f_tiny", "--data", f"coco-det:{folder}", *TRAIN_FAST,
            "--run", root, expect="a panoptic model cannot be trained or scored on detection data")


def test_segmentation_run_evaluated_on_detection_data_is_refused(tmp_path, det_run):
    _, folder = det_run
    root = tmp_path / "m2f"
    invoke_json("train-parent", "--model", "m2f_tiny", "--data", folder, "--recipe", "standard", *TRAIN_FAST,
                "--run", root)
    refused(root, "eval", "--run", root, "--data", f"coco-det:{folder}", "--threads", "1", "--gate", "none",
            expect="other classes than the run's dataset")


@pytest.mark.parametrize("case, expect", [
    ("outside", "lies outside the 60x40 image"),
    ("category", "unknown category_id 99"),
    ("no_images", "no images"),
    ("missing_file", "missing on disk"),
])
def test_bad_detection_data_is_refused_by_train_parent(tmp_path, case, expect):
    data, skip = instances(), ()
    if case == "outside":
        data["annotations"][0]["bbox"] = [55.0, 6.0, 20.0, 12.0]
    elif case == "category":
        data["annotations"][0]["category_id"] = 99
    elif case == "no_images":
        data["images"], data["annotations"] = [], []
    else:
        skip = ("a.png",)
    root = write_det(tmp_path / "data", data, skip_files=skip)
    run = tmp_path / "run"
    refused(run, "train-parent", "--model", "detr_tiny", "--data", f"coco-det:{root}", *TRAIN_FAST, "--run", run,
            expect=expect)


def test_detection_model_on_semantic_data_is_refused(tmp_path):
    import numpy as np
    from PIL import Image

    ade = tmp_path / "ade"
    for sub in ("images/training", "annotations/training"):
        (ade / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(ade / "images/training/a.jpg")
    Image.fromarray(np.ones((32, 32), np.uint8)).save(ade / "annotations/training/a.png")
    run = tmp_path / "run"
    # DETR's builder refuses first (no thing class to box); the data-task check stands behind it
    refused(run, "train-parent", "--model", "detr_tiny", "--data", f"ade20k:{ade}", *TRAIN_FAST, "--run", run,
            expect="thing_ids must be a non-empty subset")


def test_segmentation_checkpoint_made_a_run_on_detection_data_is_refused(tmp_path, det_run):
    """init-run of a Mask2Former checkpoint whose classes fit the detection data (5, all things)
    onto coco-det: the classes pass, the task does not."""
    from adaseg.runs.parent import PARENT_KIND, build_model, parent_config
    from adaseg.storage.checkpoint import save_checkpoint

    _, folder = det_run
    options = {"num_classes": 5, "thing_ids": [0, 1, 2, 3, 4]}
    torch.manual_seed(0)
    model = build_model("m2f_tiny", options)
    ckpt = tmp_path / "m2f.safetensors"
    save_checkpoint(ckpt, model.state_dict(), kind=PARENT_KIND, config=parent_config("m2f_tiny", options),
                    extra={"task": model.task})
    run = tmp_path / "run"
    refused(run, "init-run", "--from", ckpt, "--data", f"coco-det:{folder}", "--run", run,
            expect="a panoptic model cannot be trained or scored on detection data")
    assert not run.exists()


def test_interrupted_training_on_detection_data_resumes_to_the_same_weights(tmp_path, det_run):
    """Box augmentation is a function of the seed and the iteration (the dataset's generator is
    reseeded every iteration, as for segmentation): stopped after iteration 2 and resumed, a
    DETR on coco-det ends with the weights of an uninterrupted run."""
    from adaseg.engine.train_parent import TrainSettings, train_parent
    from adaseg.storage.checkpoint import read_checkpoint_meta

    _, folder = det_run
    settings = TrainSettings(model="detr_tiny", data=f"coco-det:{folder}", init="none", iters=4, batch_size=2,
                             ckpt_every=2)
    stopped = RunDir(tmp_path / "stopped")

    def stop(done, _losses):
        if done == 2:
            raise KeyboardInterrupt

    torch.set_num_threads(1)
    with pytest.raises(KeyboardInterrupt):
        train_parent(stopped, settings, device=torch.device("cpu"), on_iteration=stop)
    assert stopped.last_path.is_file() and not stopped.parent_path.exists()
    out = invoke_json("train-parent", "--resume", "--run", stopped.root, "--threads", "1")
    assert out["resumed_from"] == 2
    straight = tmp_path / "straight"
    invoke_json("train-parent", "--model", "detr_tiny", "--data", f"coco-det:{folder}", "--init", "none",
                "--iters", "4", "--batch-size", "2", "--ckpt-every", "2", "--threads", "1", "--run", straight)
    assert (read_checkpoint_meta(stopped.parent_path).fingerprint
            == read_checkpoint_meta(RunDir(straight).parent_path).fingerprint)
