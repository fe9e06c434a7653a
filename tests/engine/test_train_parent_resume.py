"""A train-parent killed with SIGKILL mid-training resumes from its last checkpoint and ends
with exactly the weights of an uninterrupted run (everything random in an iteration is a
function of the seed and the iteration)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from recipe_testing import invoke_json, write_folder

from adaseg.storage.checkpoint import read_checkpoint_meta
from adaseg.runs.run_dir import RunDir

ARGS = ["--iters", "12", "--batch-size", "2", "--ckpt-every", "2", "--init", "none", "--threads", "1"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_sigkill_then_resume_continues_from_the_saved_iteration(tmp_path):
    folder = write_folder(tmp_path / "synth")
    killed = RunDir(tmp_path / "killed")
    cmd = [sys.executable, "-m", "adaseg.cli.main", "train-parent", "--data", folder, *ARGS, "--run",
           str(killed.root), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sidecar = killed.last_path.with_suffix(".json")
    deadline = time.monotonic() + 240
    try:
        while not sidecar.is_file():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not killed.parent_path.exists(), "the run finished before it was killed"
    saved = read_checkpoint_meta(killed.last_path).extra["iteration"]
    assert 2 <= saved < 12 and saved % 2 == 0

    out = invoke_json("train-parent", "--resume", "--run", killed.root, "--threads", "1")
    assert out["resumed_from"] == saved and out["iterations"] == 12
    starts = [json.loads(line) for line in killed.log_path.read_text().splitlines()]
    assert [e["resume"] for e in starts if e["event"] == "start"][-1] is True

    straight = RunDir(tmp_path / "straight")
    invoke_json("train-parent", "--data", folder, *ARGS, "--run", straight.root)
    assert read_checkpoint_meta(killed.parent_path).fingerprint == read_checkpoint_meta(straight.parent_path).fingerprint
