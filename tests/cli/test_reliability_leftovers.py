"""The items left open by the earlier reliability work (issue 25, "also open from before"):
fit-gate verifies the parent's bytes, --limit / --flops-images beyond the images are refused
(the report name says limitN / flopsN and must be true), model-dependent refusals come before
the log records a start, a disk-full log write is one line, and the demo does not silently
re-derive a corrupt derived dataset.

Battery style: each case asserts the exit code, one ``Error:`` line, no traceback and every
file byte-identical afterwards (``refused``; here the log too where the case is about it)."""

from __future__ import annotations

import errno

import pytest
from recipe_testing import invoke, refused

EVAL = ("--warmup", "0", "--timed", "1", "--threads", "1")


def _flip(path, offset: int = -3) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def _log(run) -> bytes:
    return run.log_path.read_bytes() if run.log_path.exists() else b""


def test_fit_gate_refuses_a_parent_damaged_after_derive(run):
    _flip(run.parent_path)  # a byte of the weights: the header (and its fingerprint) unchanged
    refused(run.root, "fit-gate", "--beta", "0.01", "--epochs", "1", "--run", run.root,
            expect=f"{run.parent_path} is corrupt")


@pytest.mark.parametrize("args, expect", [
    (("--limit", "5"), "--limit 5 is more than the 4 val images"),
    (("--limit", "2", "--flops-images", "3"), "--flops-images 3 is more than the 2 images evaluated"),
    (("--flops-images", "5"), "--flops-images 5 is more than the 4 images evaluated"),
])
def test_counts_beyond_the_images_are_refused_not_clamped(run, args, expect):
    log = _log(run)
    refused(run.root, "eval", "--gate", "none", *args, *EVAL, "--run", run.root, expect=expect)
    assert _log(run) == log  # refused before the log records a start
    refused(run.root, "sweep", "--exits", "2", "--betas", "none", *args, "--bootstrap", "0", "--threads", "1",
            "--run", run.root, expect=expect)
    assert _log(run) == log


def test_limit_equal_to_the_images_is_accepted_and_named(run):
    result = invoke("eval", "--gate", "none", "--limit", "4", "--flops-images", "4", *EVAL, "--run", run.root)
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(run.report_path("full_limit4_flops4").read_text())
    assert report["settings"]["images"] == 4 and report["settings"]["flops_images"] == 4


@pytest.mark.parametrize("args, expect", [
    (("--exit", "99", "--gate", "none"), "--exit 99 is outside the parent's layers 1..6"),
    (("--gate", "none", "--pause", "6:0.5"), "6:0.5"),
    (("--exit", "2", "--pause", "3:0.5"), "pause layer 3 is not below --exit 2"),
])
def test_model_dependent_refusals_come_before_the_start_line(run, args, expect):
    log = _log(run)
    refused(run.root, "eval", *args, "--limit", "1", *EVAL, "--run", run.root, expect=expect)
    assert _log(run) == log


def test_a_log_write_failing_mid_run_is_one_line(run, monkeypatch):
    """Disk full when fit-gate logs its end: one line naming the cause, no traceback."""
    from adaseg.utils.progress import JsonlLog

    real = JsonlLog.write

    def full_disk(self, event, **fields):
        if event == "done":
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return real(self, event, **fields)

    monkeypatch.setattr(JsonlLog, "write", full_disk)
    result = invoke("fit-gate", "--beta", "0.01", "--epochs", "1", "--run", run.root)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("Error:") == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"Error: {run.log_path}: No space left on device while `adaseg fit-gate` was writing")
    assert not [p for p in run.root.rglob(".tmp-*")]


def test_a_log_whose_os_write_fails_names_the_log(tmp_path, monkeypatch):
    import adaseg.utils.progress as progress

    def no_space(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    log = progress.JsonlLog(tmp_path / "log.jsonl", command="x")
    monkeypatch.setattr(progress.os, "write", no_space)
    with pytest.raises(OSError) as info:
        log.write("start")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "log.jsonl")


def test_demo_refuses_a_corrupt_derived_dataset(run):
    _flip(run.derived_path)
    line = refused(run.root, "demo", "--eval-limit", "1", "--threads", "1", "--quiet", "--run", run.root,
                   expect=f"{run.derived_path} is corrupt")
    assert "the demo does not replace it silently" in line and f"adaseg derive --run {run.root}" in line


def test_batch_size_enters_the_report_name_where_it_matters(tmp_path):
    """Padding depends on the batch only when the evaluated images differ in size."""
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    from adaseg.engine.evaluate import EvalSettings
    from adaseg.runs.run_data import sizes_differ

    assert EvalSettings(batch_size=2).name() == "full"
    assert EvalSettings(batch_size=2, limit=3).name(sizes_vary=True) == "full_limit3_batch2"
    assert EvalSettings(batch_size=8).name(sizes_vary=True) == "full"  # the default batch: no suffix
    paths = []
    for i, (h, w) in enumerate([(4, 4), (4, 4), (5, 4)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(paths[-1])
    data = SimpleNamespace(records=[SimpleNamespace(image_path=str(p)) for p in paths])
    assert not sizes_differ(data, 2) and sizes_differ(data, 3)


def test_equal_sized_images_keep_the_name_at_any_batch_size(run):
    result = invoke("eval", "--gate", "none", "--limit", "2", "--batch-size", "2", *EVAL, "--run", run.root)
    assert result.exit_code == 0, result.output
    assert run.report_path("full_limit2").is_file()
