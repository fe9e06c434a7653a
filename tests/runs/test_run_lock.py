"""The run-directory lock and interruptions, with real processes: a second writer is refused
naming the holder's pid and command; a holder killed with SIGKILL is reported by the next
command; two train-parent on one run train once; SIGTERM / Ctrl-C end a run with a message and
an ``interrupted`` record in log.jsonl."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
from recipe_testing import invoke, snapshot, trained_run

from adaseg.storage.checkpoint import load_checkpoint
from adaseg.runs.run_dir import RunDir
from adaseg.runs.lock import LOCK_NAME, RunLock, RunLockedError, holds_lock

ADASEG = [sys.executable, "-m", "adaseg.cli.main"]
HOLD = """
import sys, time
from adaseg.runs.lock import RunLock
RunLock(sys.argv[1], command="holder-under-test").acquire()
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, folder):
    return trained_run(tmp_path_factory.mktemp("runs") / "run", folder, gate_args=None)


@pytest.fixture
def holder(run):
    """A separate process holding ``run``'s lock (killed at the end of the test)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run.root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _events(run: RunDir) -> list[dict]:
    if not run.log_path.exists():
        return []
    return [json.loads(line) for line in run.log_path.read_text().splitlines()]


def test_lock_is_reentrant_in_process_and_removed_on_release(tmp_path):
    root = tmp_path / "r"
    outer, inner = RunLock(root, command="outer"), RunLock(root, command="inner")
    assert outer.acquire() is None and inner.acquire() is None
    assert json.loads((root / LOCK_NAME).read_text())["command"] == "outer"
    inner.release()
    assert holds_lock(root) and (root / LOCK_NAME).exists()
    outer.release()
    assert not holds_lock(root) and not (root / LOCK_NAME).exists()


def test_second_writer_is_refused_naming_the_holder(run, holder):
    with pytest.raises(RunLockedError, match=rf"in use by `holder-under-test` \(pid {holder.pid}, since"):
        RunLock(run.root).acquire()
    for args in (["fit-gate", "--beta", "0.001"], ["derive", "--threads", "1"],
                 ["eval", "--limit", "1", "--timed", "1", "--warmup", "0"],
                 ["train-parent", "--resume", "--threads", "1"]):
        before = snapshot(run.root, skip=())  # the log too: a refused writer writes nothing at all
        result = invoke(*args, "--run", run.root)
        assert result.exit_code == 1, result.output
        assert result.output.count("Error:") == 1 and "Traceback" not in result.output
        assert f"pid {holder.pid}" in result.output and "holder-under-test" in result.output
        assert snapshot(run.root, skip=()) == before


def test_lock_of_a_killed_holder_is_reported_and_taken_over(run, holder, capfd):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (run.root / LOCK_NAME).exists()  # its record stays; the kernel released the flock
    result = invoke("fit-gate", "--beta", "0.001", "--run", run.root, "--quiet")
    assert result.exit_code == 0, result.output
    note = result.output + capfd.readouterr().err
    assert f"pid {holder.pid}" in note and "ended without releasing the lock" in note
    stale = [e for e in _events(run) if e["event"] == "stale_lock"]
    assert len(stale) == 1 and stale[0]["previous_pid"] == holder.pid
    assert not (run.root / LOCK_NAME).exists()


def test_two_train_parent_on_one_run_train_once(folder, tmp_path):
    root = tmp_path / "run"
    args = [*ADASEG, "train-parent", "--data", folder, "--iters", "12", "--batch-size", "2", "--init", "none",
            "--threads", "1", "--recipe", "standard", "--run", str(root), "--quiet"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=600) for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes == [0, 1], outs
    loser = (first, second)[[first.returncode, second.returncode].index(1)]
    winner = first if loser is second else second
    err = outs[[first, second].index(loser)][1]
    assert err.count("Error:") == 1 and "Traceback" not in err
    # refused by the lock while the winner trains (naming it, or -- if the winner could not yet
    # write its record -- saying the run is in use), or after it by the parent it wrote
    assert ("in use by `" in err and f"pid {winner.pid}" in err or "in use by another adaseg process" in err
            or "already holds a trained parent" in err), err
    done = [e for e in _events(RunDir(root)) if e["command"] == "train-parent" and e["event"] == "done"]
    assert len(done) == 1
    load_checkpoint(RunDir(root).parent_path)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_ends_a_run_with_a_message_and_a_log_record(folder, tmp_path, sig, code):
    run = RunDir(tmp_path / "run")
    args = [*ADASEG, "train-parent", "--data", folder, "--iters", "1000", "--batch-size", "2", "--init", "none",
            "--threads", "1", "--recipe", "standard", "--ckpt-every", "1", "--run", str(run.root), "--quiet"]
    # SIGINT must reach Python's default handler (a child may inherit SIG_IGN from a shell)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not run.last_path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == code, (out, err)
    name = signal.Signals(sig).name
    assert f"adaseg train-parent: interrupted by {name}" in err and "Traceback" not in err, err
    assert "--resume" in err
    events = _events(run)
    assert events[-1]["event"] == "interrupted" and events[-1]["signal"] == name and events[-1]["ok"] is False
    assert not any(e.get("ok") is True for e in events)
    assert not (run.root / LOCK_NAME).exists()
    assert not [p for p in run.root.rglob(".tmp-*")]  # nothing half-written left behind
    _, meta = load_checkpoint(run.last_path)  # the saved state is complete and verified
    assert meta.extra["iteration"] >= 1


def test_under_torchrun_rank_0_takes_the_lock(run, tmp_path):
    """Only rank 0 writes, so only rank 0 locks: a held lock stops the whole torchrun job with
    the holder named, and a free one lets it run (and is released at the end)."""
    from recipe_testing import torchrun

    cwd = tmp_path / "cwd"
    default = RunDir(cwd / "runs" / "default")
    shutil.copytree(run.root, default.root)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(default.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        before = snapshot(default.root, skip=())
        refused = torchrun("derive", "--threads", "1", "--quiet", cwd=cwd)
        assert refused.returncode != 0
        assert f"is in use by `holder-under-test` (pid {proc.pid}" in refused.stderr, refused.stderr
        assert snapshot(default.root, skip=()) == before
    finally:
        proc.kill()
        proc.wait()
    (default.root / LOCK_NAME).unlink()  # the killed holder's record (reported as stale otherwise)
    done = torchrun("derive", "--threads", "1", "--quiet", cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert not (default.root / LOCK_NAME).exists()
    assert "done" in [e["event"] for e in _events(default) if e["command"] == "derive"]
