"""``--data`` on the run-reading commands (derive, eval): the run's own dataset by default,
another dataset only when its categories are the run's; otherwise one line, exit 1, and the
run directory untouched."""

from __future__ import annotations

import json
import shutil

import pytest

from adaseg.runs.run_dir import RunDir
from recipe_testing import TRAIN_FAST, invoke, invoke_json, snapshot

EVAL = ("--gate", "none", "--threads", "1", "--warmup", "0", "--timed", "1", "--batch-size", "2")


@pytest.fixture(scope="module")
def run(tmp_path_factory, folder):
    root = tmp_path_factory.mktemp("runs") / "run"
    invoke_json("train-parent", "--data", folder, *TRAIN_FAST, "--run", root)
    return RunDir(root)


def _copy(folder: str, dest, edit=None) -> str:
    """A copy of the COCO-panoptic folder at ``dest``; ``edit(categories)`` changes both splits'
    category lists in place."""
    shutil.copytree(folder, dest)
    if edit is not None:
        for split in ("train", "val"):
            path = dest / "annotations" / f"panoptic_{split}.json"
            data = json.loads(path.read_text())
            edit(data["categories"])
            path.write_text(json.dumps(data))
    return str(dest)


def _rename_first(categories):
    categories[0]["name"] = categories[0]["name"] + "_renamed"


def _flip_first_isthing(categories):
    categories[0]["isthing"] = 1 - int(categories[0]["isthing"])


def _add_category(categories):
    extra = dict(categories[-1], id=max(c["id"] for c in categories) + 1, name="extra")
    categories.append(extra)


def test_eval_data_same_spec_and_same_classes_give_the_same_metrics(run, folder, tmp_path):
    base = invoke_json("eval", *EVAL, "--run", run.root)
    same = invoke_json("eval", *EVAL, "--data", folder, "--run", run.root)
    twin = invoke_json("eval", *EVAL, "--data", _copy(folder, tmp_path / "twin"), "--run", run.root)
    for report in (same, twin):
        assert report["metrics"] == base["metrics"]
        assert report["settings"]["images"] == base["settings"]["images"] == 4
    assert twin["info"]["data"] == str(tmp_path / "twin") and base["info"]["data"] == folder
    # A report on another dataset is named after it: it does not replace the run's own report.
    assert base["settings"]["name"] == "full" and twin["settings"]["name"] == "full_data-twin"
    assert run.report_path("full").is_file() and run.report_path("full_data-twin").is_file()


def test_derive_data_with_the_runs_classes_is_accepted(run, folder, tmp_path):
    twin = _copy(folder, tmp_path / "twin")
    invoke_json("derive", "--data", twin, "--run", run.root, "--threads", "1")
    from adaseg.runs.derived import DerivedDataset

    assert DerivedDataset.load(run.derived_path).info["data"] == twin


@pytest.mark.parametrize("edit, differs", [(_rename_first, "_renamed"), (_flip_first_isthing, "thing"),
                                           (_add_category, "categories")])
@pytest.mark.parametrize("command", ["eval", "derive"])
def test_data_with_other_classes_is_refused(run, folder, tmp_path, command, edit, differs):
    other = _copy(folder, tmp_path / "other", edit)
    before = snapshot(run.root)
    args = EVAL if command == "eval" else ("--threads", "1")
    result = invoke(command, *args, "--data", other, "--run", run.root)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: --data")
    assert other in lines[0] and folder in lines[0] and differs in lines[0]
    assert snapshot(run.root) == before
