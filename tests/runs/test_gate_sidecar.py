"""``eval --gate X.json`` (a gate's JSON sidecar) is refused with one line naming the
``.safetensors`` file to pass; nothing is written."""

from __future__ import annotations

import json

import pytest

from adaseg.runs.run_dir import RunDir
from recipe_testing import TRAIN_FAST, invoke, invoke_json, snapshot, write_folder

EVAL = ("--threads", "1", "--warmup", "0", "--timed", "1", "--batch-size", "2")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = write_folder(tmp_path_factory.mktemp("data") / "synth")
    root = tmp_path_factory.mktemp("runs") / "run"
    invoke_json("train-parent", "--data", folder, *TRAIN_FAST, "--run", root)
    invoke_json("derive", "--run", root, "--threads", "1")
    invoke_json("fit-gate", "--beta", "0", "--run", root, "--epochs", "2")
    return RunDir(root)


@pytest.mark.parametrize("form", ["path", "name"])
def test_gate_sidecar_is_refused_naming_the_weights_file(run, form):
    (weights,) = run.gate_files()
    sidecar = weights.with_suffix(".json")
    assert sidecar.is_file() and json.loads(sidecar.read_text())  # it is the real sidecar
    before = snapshot(run.root)
    result = invoke("eval", "--gate", sidecar if form == "path" else sidecar.name, *EVAL, "--run", run.root)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "JSON sidecar" in lines[0] and str(weights) in lines[0], lines
    assert "header" not in lines[0]  # not the safetensors reader's error any more
    assert snapshot(run.root) == before
    # The file it names works.
    report = invoke_json("eval", "--gate", weights, *EVAL, "--run", run.root)
    assert report["settings"]["gate"] == str(weights)


def test_json_without_a_gate_beside_it_is_refused(run, tmp_path):
    stray = tmp_path / "notes.json"
    stray.write_text("{}")
    before = snapshot(run.root)
    result = invoke("eval", "--gate", stray, *EVAL, "--run", run.root)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(stray) in lines[0] and "notes.safetensors" in lines[0], lines
    assert snapshot(run.root) == before
