"""`adaseg fit-gate` through Click's CliRunner: the happy path and every bad input
(one clear line, non-zero exit, nothing written)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from adaseg.cli.fit_gate import LOSS_CHOICES
from adaseg.cli.main import main
from adaseg.storage.checkpoint import save_checkpoint
from adaseg.engine.gate_targets import LOSSES

FAST = ["--epochs", "20"]


def _snapshot(root):
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")} if root.exists() else {}


def _invoke(args):
    return CliRunner().invoke(main, ["fit-gate", *args])


def test_loss_choices_match_the_recipe():
    assert LOSS_CHOICES == LOSSES


def test_happy_path_json_and_log(make_run):
    run = make_run(n=60, nan_rows=4)
    result = _invoke(["--beta", "0.0005", "--K", "5", "--run", str(run.root), "--json", *FAST])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    path = run.gates_dir / "gate_beta0.0005_K5_hard-ce.safetensors"
    assert summary["path"] == str(path) and path.is_file()
    assert summary["exits"] == [2, 3, 4, 5] and summary["num_excluded"] == 4 and summary["num_images"] == 56
    assert sum(summary["target_counts"].values()) == 56
    events = [json.loads(line) for line in run.log_path.read_text().splitlines()]
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "done"
    assert all(e["command"] == "fit-gate" for e in events)


def test_tables_off_a_terminal(make_run):
    run = make_run(n=40)
    result = _invoke(["--beta", "0.005", "--run", str(run.root), "--loss", "soft-ce", "--temperature", "0.01", *FAST])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Gate targets on the training set" in out and "Expected encoder cost" in out
    assert "of full depth (6)" in out and "gate_beta0.005_K6_soft-ce_T0.01.safetensors" in out
    assert "\x1b[" not in out  # no terminal control codes in logs
    assert "fit-gate: 20/20" in out  # the plain progress line


def test_quiet_prints_nothing(make_run):
    run = make_run(n=30)
    result = _invoke(["--beta", "0", "--run", str(run.root), "--quiet", *FAST])
    assert result.exit_code == 0 and result.output == ""
    assert run.gate_files()


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("full", ["--beta", "-0.1"], "Invalid value for '--beta': -0.1: must be a finite number >= 0"),
        ("full", ["--beta", "nan"], "Invalid value for '--beta'"),
        ("full", ["--beta", "0.1", "--K", "7"], "--K 7 is larger than the parent's encoder depth 6"),
        ("full", ["--beta", "0.1", "--K", "1"], "--K 1 is below the smallest exit (2)"),
        ("full", ["--beta", "0.1", "--loss", "focal"], "Invalid value for '--loss'"),
        ("full", ["--beta", "0.1", "--temperature", "0.5"], "--temperature applies to soft-ce and soft-mse only"),
        ("full", ["--beta", "0.1", "--epochs", "0"], "Invalid value for '--epochs'"),
        ("full", ["--beta", "0.1", "--lr", "0"], "Invalid value for '--lr'"),
        ("full", [], "Missing option '--beta'"),
        ("empty", ["--beta", "0.1"], "has no parent checkpoint: run `adaseg train-parent --run {root}` first"),
        ("parent", ["--beta", "0.1"], "has no derived dataset: run `adaseg derive --run {root}` first"),
        ("other-parent", ["--beta", "0.1"], "was derived from parent"),
        ("corrupt", ["--beta", "0.1"], "is not readable"),
    ],
)
def test_bad_input(make_run, tmp_path, setup, args, message):
    if setup == "empty":
        root = tmp_path / "empty"
    else:
        run = make_run(with_derived=setup != "parent", n=20)
        root = run.root
        if setup == "other-parent":  # the parent was retrained after derive
            save_checkpoint(run.parent_path, {"w": torch.ones(6)}, kind="parent", config={})
        if setup == "corrupt":
            run.derived_path.write_bytes(b"truncated")
    before = _snapshot(root)
    result = _invoke([*args, "--run", str(root)])
    assert result.exit_code != 0
    assert message.format(root=root) in result.output, result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1
    assert _snapshot(root) == before  # nothing written, nothing overwritten
