"""Bad input to train-parent / derive / fit-gate / eval: one clear line, non-zero exit, and the
run directory byte-for-byte as it was (its log, which records every attempt, aside)."""

from __future__ import annotations

import shutil

import pytest
from recipe_testing import TRAIN_FAST, invoke, invoke_json, snapshot

from adaseg.runs.run_dir import RunDir


def _fails(run: RunDir, *args, expect: str) -> str:
    before = snapshot(run.root)
    result = invoke(*args)
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    message = lines[-1]
    assert expect in result.output, result.output
    assert "Traceback" not in result.output
    assert snapshot(run.root) == before, "the run directory changed"
    return message


@pytest.mark.parametrize(
    "spec, expect",
    [
        ("5:0.3,3:0.4", "strictly increase"),
        ("3:0.4,3:0.3", "strictly increase"),
        ("3:1.5", "(0, 1)"),
        ("3:0", "(0, 1)"),
        ("3:-0.2", "(0, 1)"),
        ("7:0.4", "below the encoder depth 6"),
        ("6:0.4", "below the encoder depth 6"),
        ("garbage", "not layer:ratio"),
        ("3:", "not layer:ratio"),
        ("x:0.4", "not layer:ratio"),
    ],
)
def test_eval_rejects_malformed_pause(run, spec, expect):
    _fails(run, "eval", "--run", run.root, "--pause", spec, expect=expect)


@pytest.mark.parametrize(
    "args, expect",
    [
        (("fit-gate", "--beta", "-0.001"), "must be a finite number >= 0"),
        (("fit-gate", "--beta", "0.0005", "--K", "7"), "larger than the parent's encoder depth 6"),
        (("eval", "--exit", "9"), "outside the parent's layers 1..6"),
        (("eval", "--exit", "3", "--gate", "latest"), "exclusive"),
        (("eval", "--gate", "no_such_gate.safetensors"), "no such file"),
        (("train-parent", "--iters", "2"), "--resume"),
        (("train-parent", "--resume", "--recipe", "wsd"), "differs from the interrupted run's standard"),
    ],
)
def test_bad_settings(run, args, expect):
    _fails(run, *args, "--run", run.root, expect=expect)


@pytest.mark.parametrize(
    "args, expect",
    [
        (("--pause-range", "0.9:0.2"), "0 < lo <= hi < 1"),
        (("--pause-range", "0.2"), "0 < lo <= hi < 1"),
        (("--alphas", "1,2"), "--alphas has 2 values for 5 exits"),
        (("--alphas", "0.5,0.5,0.5,-1,1"), "must all be > 0"),
        (("--exits", "2,9"), "increasing layers in 1..6"),
        (("--pause-layers", "6"), "below the depth 6"),
        (("--exits", "a,b"), "not a list of integers"),
    ],
)
def test_train_parent_rejects_bad_options(tmp_path, folder, args, expect):
    root = tmp_path / "new"
    result = invoke("train-parent", "--data", folder, *TRAIN_FAST, *args, "--run", root)
    assert result.exit_code != 0 and expect in result.output, result.output
    assert not (root / "checkpoints").exists()


def test_missing_steps_name_the_command_to_run_first(tmp_path):
    empty = RunDir(tmp_path / "empty")
    for cmd in (("derive",), ("eval",), ("fit-gate", "--beta", "0.0005")):
        msg = _fails(empty, *cmd, "--run", empty.root, expect="adaseg train-parent")
        assert msg.startswith("Error:") and f"--run {empty.root}` first" in msg
    assert not empty.root.exists()


def test_missing_derived_and_gate(run):
    run.derived_path.unlink()
    _fails(run, "fit-gate", "--beta", "0.0005", "--run", run.root, expect=f"run `adaseg derive --run {run.root}` first")
    shutil.rmtree(run.gates_dir)
    _fails(run, "eval", "--gate", "latest", "--run", run.root, expect="adaseg fit-gate")


def test_gate_fitted_for_another_parent(run, base_run, tmp_path, folder):
    other = RunDir(tmp_path / "other")
    invoke_json("train-parent", "--data", folder, *TRAIN_FAST, "--recipe", "standard", "--seed", "3", "--run", other.root)
    gate = base_run.gate_files()[0]
    _fails(other, "eval", "--gate", gate, "--run", other.root, expect="was fitted for parent")


def test_checkpoint_for_another_model(run, tmp_path, folder):
    root = tmp_path / "seg"
    result = invoke("train-parent", "--model", "segmenter_tiny", "--data", folder, "--iters", "1",
                    "--init", run.parent_path, "--run", root)
    assert result.exit_code != 0
    assert "is a checkpoint for model 'm2f_tiny', not 'segmenter_tiny'" in result.output
    assert not root.exists()
