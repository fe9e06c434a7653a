"""The four commands with PAUMER's model (Segmenter, a semantic model): derive records
per-image mIoU, eval reports mIoU (no PQ/AP), both checked against a hand computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from recipe_testing import invoke_json, write_folder

from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.runs.run_dir import RunDir


def _ious(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (intersection, union) over pixels whose ground truth is not 255."""
    valid = gt != 255
    inter = np.array([np.sum((pred == c) & (gt == c) & valid) for c in range(num_classes)], dtype=float)
    union = np.array([np.sum(((pred == c) | (gt == c)) & valid) for c in range(num_classes)], dtype=float)
    return inter, union


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = write_folder(tmp_path_factory.mktemp("data") / "synth")
    root = tmp_path_factory.mktemp("runs") / "seg"
    invoke_json("train-parent", "--model", "segmenter_tiny", "--data", folder, "--iters", "2", "--batch-size", "2",
                "--init", "none", "--threads", "1", "--run", root)
    invoke_json("derive", "--run", root, "--threads", "1")
    invoke_json("fit-gate", "--beta", "0", "--run", root, "--epochs", "5")
    return RunDir(root)


def _dataset(run, split):
    from adaseg.data import build_dataset

    return build_dataset(json.loads(run.config_path.read_text())["data"], split, train=False)


def test_derive_records_per_image_miou_of_single_exit_forwards(run):
    from adaseg.data import collate
    from adaseg.runs.derived import DerivedDataset
    from adaseg.runs.parent import load_parent

    derived = DerivedDataset.load(run.derived_path)
    assert derived.metric == "miou" and derived.exit_list == [2, 3, 4, 5, 6]
    model, _ = load_parent(run.parent_path)
    dataset = _dataset(run, "train")
    for i in (0, 5):
        batch = collate([dataset[i]])
        h, w = batch["sizes"][0]
        gt = batch["targets"][0]["semantic"][:h, :w].numpy()
        for col, k in enumerate(derived.exit_list):
            with torch.no_grad():
                out = model(batch["images"], batch["padding_mask"], AdaptiveSettings(exits=k))
            pred = model.postprocess(out, batch["sizes"], task="semantic")[0].cpu().numpy()
            inter, union = _ious(pred, gt, dataset.meta.num_classes)
            expected = float(np.mean(inter[union > 0] / union[union > 0])) if (union > 0).any() else math.nan
            assert float(derived.quality[i, col]) == pytest.approx(expected, abs=1e-9)


def test_eval_reports_dataset_miou_with_an_exit_and_pausing(run):
    from adaseg.data import collate
    from adaseg.models.adaptive.plan import PausePlan
    from adaseg.runs.parent import load_parent

    report = invoke_json("eval", "--run", run.root, "--exit", "5", "--pause", "2:0.5", "--batch-size", "2",
                         "--warmup", "0", "--timed", "1", "--threads", "1")
    assert "PQ" not in report["metrics"] and "AP" not in report["metrics"]
    model, _ = load_parent(run.parent_path)
    dataset = _dataset(run, "val")
    inter = union = 0.0
    for i in range(len(dataset)):
        batch = collate([dataset[i]])
        h, w = batch["sizes"][0]
        with torch.no_grad():
            out = model(batch["images"], batch["padding_mask"], AdaptiveSettings(exits=5, pause=PausePlan.parse("2:0.5")))
        pred = model.postprocess(out, batch["sizes"], task="semantic")[0].cpu().numpy()
        a, b = _ious(pred, batch["targets"][0]["semantic"][:h, :w].numpy(), dataset.meta.num_classes)
        inter, union = inter + a, union + b
    assert report["metrics"]["mIoU"] == pytest.approx(float(np.mean(inter[union > 0] / union[union > 0])), abs=1e-9)
    assert report["exits"]["histogram"] == {"5": len(dataset)}

    gated = invoke_json("eval", "--run", run.root, "--gate", "latest", "--warmup", "0", "--timed", "1",
                        "--threads", "1")
    assert sum(gated["exits"]["histogram"].values()) == len(dataset)
