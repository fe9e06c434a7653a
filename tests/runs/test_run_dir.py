"""The run directory: paths, which-command-first messages, parent consistency."""

from __future__ import annotations

import pytest
import torch

from adaseg.storage.checkpoint import save_checkpoint
from adaseg.runs.derived import load_run_derived
from adaseg.runs.run_dir import MissingStepError, RunDir, RunDirError, gate_stem


@pytest.mark.parametrize(
    "present, needed, message",
    [
        ((), ("config",), "has no config.json: run `adaseg train-parent --run {root}` first"),
        ((), ("derived", "parent"), "has no parent checkpoint: run `adaseg train-parent --run {root}` first"),
        (("parent",), ("parent", "derived"), "has no derived dataset: run `adaseg derive --run {root}` first"),
        (("parent", "derived"), ("gate",), "has no gate: run `adaseg fit-gate --beta 0.0005 --run {root}` first"),
    ],
)
def test_require_names_the_command(make_run, tmp_path, present, needed, message):
    run = make_run(with_derived="derived" in present) if present else RunDir(tmp_path / "empty")
    with pytest.raises(MissingStepError) as err:
        run.require(*needed)
    assert str(err.value) == f"{run.root} " + message.format(root=run.root)


def test_require_passes_when_present(make_run):
    run = make_run()
    run.require("parent", "derived")
    assert run.has("parent") and run.has("derived") and not run.has("gate")


def test_layout(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.parent_path == tmp_path / "r" / "checkpoints" / "parent.safetensors"
    assert run.derived_path == tmp_path / "r" / "derived.safetensors"
    assert run.log_path == tmp_path / "r" / "log.jsonl"
    assert run.gate_path(beta=0.0005, K=6, loss="hard-ce").name == "gate_beta0.0005_K6_hard-ce.safetensors"
    assert gate_stem(beta=0.05, K=4, loss="soft-ce", temperature=0.01) == "gate_beta0.05_K4_soft-ce_T0.01"
    assert run.report_path("gate_beta0.0005").name == "eval_gate_beta0.0005.json"
    with pytest.raises(RunDirError, match="may only hold"):
        run.report_path("../escape")


def test_config_and_report_roundtrip(tmp_path):
    run = RunDir(tmp_path / "r")
    run.write_config({"model": "m2f", "exits": [2, 3]})
    assert run.read_config() == {"model": "m2f", "exits": [2, 3]}
    run.write_report("x", {"pq": 0.5})
    assert run.report_path("x").is_file()
    run.config_path.write_text("{broken")
    with pytest.raises(RunDirError, match="not valid JSON"):
        run.read_config()


def test_derived_from_another_parent_is_refused(make_run):
    run = make_run()
    load_run_derived(run)  # same parent: fine
    save_checkpoint(run.parent_path, {"w": torch.zeros(6)}, kind="parent", config={"depth": 6})  # retrained
    with pytest.raises(RunDirError, match=r"was derived from parent .* run `adaseg derive --run .*` again"):
        load_run_derived(run)
    load_run_derived(run, check_parent=False)


def test_parent_save_and_load(tmp_path):
    from torch import nn

    from adaseg.runs.parent import parent_fingerprint
    from adaseg.storage.checkpoint import CheckpointError, load_into

    run = RunDir(tmp_path / "r")
    with pytest.raises(MissingStepError, match="train-parent"):
        parent_fingerprint(run)
    src = nn.Linear(2, 3)
    meta = save_checkpoint(run.parent_path, src.state_dict(), kind="parent", config={"model": "toy"})
    assert meta.kind == "parent" and parent_fingerprint(run) == meta.fingerprint
    dst = nn.Linear(2, 3)
    assert load_into(dst, run.parent_path).config == {"model": "toy"}
    assert torch.equal(dst.weight, src.weight)
    with pytest.raises(CheckpointError, match=r"weight \(3, 2\) vs \(4, 2\)"):
        load_into(nn.Linear(2, 4), run.parent_path)
