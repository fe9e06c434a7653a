"""Damaged run directories and hostile conditions, through the CLI: each case exits non-zero
with one line naming the file (no traceback) and leaves every file of the run directory
byte-identical (the log, which records every attempt, aside)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from recipe_testing import invoke, invoke_json, snapshot

from adaseg.storage.checkpoint import load_checkpoint, read_checkpoint_meta
from adaseg.storage.integrity import read_safetensors, write_safetensors
from adaseg.runs.run_dir import RunDir


EVAL = ("--limit", "2", "--flops-images", "1", "--warmup", "0", "--timed", "1", "--threads", "1")


def refused(run: RunDir, *args, expect: str, code: int = 1) -> str:
    """Run ``adaseg ARGS``; assert the refusal contract; return the error line."""
    before = snapshot(run.root)
    result = invoke(*args)
    assert result.exit_code == code, result.output + repr(result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert expect in errors[0], result.output
    assert snapshot(run.root) == before, "the run directory changed"
    assert not (run.root / ".lock").exists()
    return errors[0]


def gate_file(run: RunDir):
    return run.gate_files()[0]


def flip_middle_of_data(path) -> None:
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    raw[start + (len(raw) - start) // 2] ^= 0x10
    path.write_bytes(bytes(raw))


# --- one flipped bit in the middle of each kind of file ----------------------------------------


def test_flipped_bit_in_parent(run):
    flip_middle_of_data(run.parent_path)
    line = refused(run, "eval", "--run", run.root, "--gate", "none", *EVAL, expect=f"{run.parent_path} is corrupt")
    assert "train-parent --resume" in line
    # derive on such a parent must not replace the good derived dataset
    refused(run, "derive", "--run", run.root, "--threads", "1", expect=f"{run.parent_path} is corrupt")


def test_flipped_bit_in_training_state(run):
    flip_middle_of_data(run.last_path)
    refused(run, "train-parent", "--resume", "--iters", "3", "--threads", "1", "--run", run.root,
            expect=f"{run.last_path} is corrupt")


def test_flipped_bit_in_derived(run):
    flip_middle_of_data(run.derived_path)
    refused(run, "fit-gate", "--beta", "0.001", "--run", run.root, expect=f"{run.derived_path} is corrupt")


def test_flipped_bit_in_gate(run):
    flip_middle_of_data(gate_file(run))
    refused(run, "eval", "--run", run.root, "--gate", gate_file(run), *EVAL, expect=f"{gate_file(run)} is corrupt")


# --- NaN with a valid content hash (written by other means): refused at load ------------------------


def _rewrite_with_nan(path, name_filter) -> str:
    read = read_safetensors(path, hint="")
    tensors = dict(read.tensors)
    name = next(k for k in sorted(tensors) if name_filter(k) and tensors[k].is_floating_point())
    tensors[name] = tensors[name].clone().reshape(-1)
    tensors[name][0] = float("nan")
    tensors[name] = tensors[name].reshape(read.tensors[name].shape)
    meta = {k: v for k, v in read.meta.items() if k != "content_sha256"}
    write_safetensors(path, tensors, meta)
    return name


def test_nan_in_parent(run):
    name = _rewrite_with_nan(run.parent_path, lambda k: True)
    refused(run, "eval", "--run", run.root, "--gate", "none", *EVAL, expect=f"NaN/inf values in {name}")


def test_nan_in_training_state_names_the_file(run):
    _rewrite_with_nan(run.last_path, lambda k: k.startswith("model."))
    line = refused(run, "train-parent", "--resume", "--iters", "3", "--threads", "1", "--run", run.root,
                   expect=f"checkpoint {run.last_path} holds NaN/inf")
    assert "matrix contains invalid" not in line


def test_nan_in_gate(run):
    _rewrite_with_nan(gate_file(run), lambda k: "weight" in k)
    refused(run, "eval", "--run", run.root, "--gate", gate_file(run), *EVAL, expect="NaN/inf values in linear.weight")


def test_nan_in_derived_features(run):
    _rewrite_with_nan(run.derived_path, lambda k: k == "features")
    refused(run, "fit-gate", "--beta", "0.001", "--run", run.root, expect="features hold NaN or inf")


# --- files in the wrong place: one line, no traceback ------------------------------------------


def test_derived_file_as_gate(run):
    refused(run, "eval", "--run", run.root, "--gate", run.derived_path, *EVAL, expect="is a derived dataset")


def test_directory_as_gate(run):
    refused(run, "eval", "--run", run.root, "--gate", run.gates_dir, *EVAL, expect="is a directory")


@pytest.mark.parametrize("text", ["[1, 2]", '"m2f_tiny"', "null", "{broken"])
def test_config_that_is_not_a_json_object(run, text):
    run.config_path.write_text(text)
    refused(run, "derive", "--run", run.root, "--threads", "1", expect=str(run.config_path))
    refused(run, "eval", "--run", run.root, "--gate", "none", *EVAL, expect=str(run.config_path))


# --- output places that cannot be written: refused before any work --------------------------------


def test_log_that_cannot_be_written(run):
    run.log_path.unlink()
    run.log_path.mkdir()  # a directory where the log belongs: not writable, even by root
    refused(run, "eval", "--run", run.root, "--gate", "none", *EVAL, expect=f"cannot write {run.log_path}")
    refused(run, "fit-gate", "--beta", "0.001", "--run", run.root, expect=f"cannot write {run.log_path}")


def test_reports_that_cannot_be_written(run):
    run.reports_dir.write_text("a file where the reports folder belongs")
    refused(run, "eval", "--run", run.root, "--gate", "none", *EVAL,
            expect=f"cannot write into {run.reports_dir}: it is a file")


def test_gates_that_cannot_be_written(run):
    shutil.rmtree(run.gates_dir)
    run.gates_dir.write_text("")
    refused(run, "fit-gate", "--beta", "0.001", "--run", run.root, expect=f"cannot write into {run.gates_dir}")


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root may write regardless of permission bits")
def test_read_only_run_directory(run):
    import os

    os.chmod(run.reports_dir, 0o555)
    try:
        refused(run, "eval", "--run", run.root, "--gate", "none", *EVAL, expect=f"cannot write into {run.reports_dir}")
    finally:
        os.chmod(run.reports_dir, 0o755)


# --- a training that diverges stops at once and keeps the last good state ---------------------


def test_diverging_training_stops_and_keeps_the_last_good_state(folder, tmp_path):
    run = RunDir(tmp_path / "div")
    result = invoke("train-parent", "--data", folder, "--iters", "6", "--batch-size", "2", "--init", "none",
                    "--threads", "1", "--lr", "1e10", "--ckpt-every", "1", "--run", run.root)
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = [l for l in result.output.splitlines() if l.startswith("Error:")][0]
    assert "training diverged at iteration" in line and "--lr" in line and "invalid numeric" not in line
    diverged_at = int(line.split("diverged at iteration ")[1].split()[0])
    assert not run.parent_path.exists()
    assert not run.pending_last_path.exists() and not run.pending_last_path.with_suffix(".json").exists()
    # the state after iteration k is kept only if iteration k+1's loss was finite: the state that
    # diverged (after iteration diverged_at - 1) never replaces the last good one
    if diverged_at > 2:
        tensors, meta = load_checkpoint(run.last_path)
        assert meta.extra["iteration"] == diverged_at - 2
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
        assert f"still holds iteration {diverged_at - 2}" in line
    else:
        assert not run.last_path.exists() and "no training state was saved" in line
    log = [json.loads(l) for l in run.log_path.read_text().splitlines()]
    assert log[-1]["event"] == "failed" and log[-1]["ok"] is False
    assert all(e.get("ok") is not True for e in log)


def test_corrupt_parent_recreated_from_training_state(run):
    """The remedy the corruption message gives works: --resume rewrites the parent."""
    fingerprint = read_checkpoint_meta(run.parent_path).fingerprint
    flip_middle_of_data(run.parent_path)
    result = invoke("train-parent", "--resume", "--threads", "1", "--run", run.root, "--quiet")
    assert result.exit_code == 0, result.output
    _, meta = load_checkpoint(run.parent_path)
    assert meta.fingerprint == fingerprint


def test_report_records_the_verified_fingerprints(run):
    gate = gate_file(run)
    data = invoke_json("eval", "--run", run.root, "--gate", gate, *EVAL)
    parent = load_checkpoint(run.parent_path)[1]
    gate_meta = load_checkpoint(gate)[1]
    info = data["info"]
    assert info["parent_fingerprint"] == parent.fingerprint and info["parent_content_sha256"] == parent.content_hash
    assert info["gate_fingerprint"] == gate_meta.fingerprint and info["gate_content_sha256"] == gate_meta.content_hash


def _strip_hash(path) -> None:
    """Re-write ``path`` as adaseg wrote it before content hashes (same tensors and description)."""
    from safetensors.torch import save_file

    read = read_safetensors(path, hint="")
    meta = {k: v for k, v in read.meta.items() if k != "content_sha256"}
    save_file({k: v.clone() for k, v in read.tensors.items()}, str(path), metadata={"adaseg": json.dumps(meta)})


def test_run_directory_from_before_content_hashes_still_works(run, capfd):
    for path in (run.parent_path, run.last_path, run.derived_path, gate_file(run)):
        _strip_hash(path)
    result = invoke("fit-gate", "--beta", "0.001", "--run", run.root, "--quiet")
    assert result.exit_code == 0, result.output
    err = result.output + capfd.readouterr().err
    assert err.count("predates content hashes") == 1 and "adaseg derive --run" in err
    data = invoke_json("eval", "--run", run.root, "--gate", gate_file(run), *EVAL)
    assert data["info"]["parent_content_sha256"] is None  # legacy parent: verified by its fingerprint
    # a legacy parent whose tensors changed is still caught (by the fingerprint)
    flip_middle_of_data(run.parent_path)
    refused(run, "eval", "--run", run.root, "--gate", "none", *EVAL, expect="do not match the recorded fingerprint")


def test_divergence_after_a_good_state_keeps_that_state(folder, tmp_path, monkeypatch):
    """Weights turned to NaN after iteration 3 (a stand-in for a step that blows up): iteration
    4 diverges, the unproven state of iteration 3 is dropped, last.safetensors keeps iteration 2,
    and resuming from it (without the fault) ends exactly as an uninterrupted run."""
    from adaseg.engine import train_parent as tp

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI's --threads 1: far faster on a busy machine
    settings = tp.TrainSettings(data=folder, init="none", recipe="standard", iters=5, batch_size=2, ckpt_every=1)
    run = RunDir(tmp_path / "run")
    run.write_config({"data": folder})
    models = []
    build = tp.build_model
    monkeypatch.setattr(tp, "build_model", lambda *a, **k: models.append(build(*a, **k)) or models[-1])

    def fault(done, _losses):
        if done == 3:
            with torch.no_grad():
                next(models[-1].parameters()).fill_(float("nan"))

    try:
        with pytest.raises(tp.TrainingDiverged, match=r"diverged at iteration 4 of 5 .* still holds iteration 2"):
            tp.train_parent(run, settings, device=torch.device("cpu"), on_iteration=fault)
        _, meta = load_checkpoint(run.last_path)
        assert meta.extra["iteration"] == 2 and not run.pending_last_path.exists() and not run.parent_path.exists()

        assert tp.train_parent(run, settings, device=torch.device("cpu"), resume=True).resumed_from == 2
        straight = RunDir(tmp_path / "straight")
        tp.train_parent(straight, settings, device=torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert read_checkpoint_meta(run.parent_path).fingerprint == read_checkpoint_meta(straight.parent_path).fingerprint
