"""Atomic writes leave the old file or the new one, never a half-written one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from adaseg.storage.atomic import TMP_PREFIX, atomic_dir, atomic_path, atomic_save_safetensors, atomic_write_json


def _leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_json_written_and_replaced(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write_json(path, {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    atomic_write_json(path, {"x": 2})
    assert json.loads(path.read_text()) == {"x": 2}
    assert _leftovers(path.parent) == []


def test_json_rejects_nan_and_leaves_old_file(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"x": 1})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"x": float("nan")})
    assert json.loads(path.read_text()) == {"x": 1}
    assert _leftovers(tmp_path) == []


def test_exception_inside_keeps_original(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash while writing")
    assert path.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_safetensors_roundtrip(tmp_path):
    from safetensors.torch import load_file

    t = torch.arange(12.0).view(3, 4).T  # non-contiguous view
    atomic_save_safetensors(tmp_path / "t.safetensors", {"t": t}, metadata={"k": "v"})
    assert torch.equal(load_file(str(tmp_path / "t.safetensors"))["t"], t)


@pytest.mark.parametrize("existing", [False, True])
def test_atomic_dir(tmp_path, existing):
    target = tmp_path / "d"
    if existing:
        target.mkdir()
        (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (target / "new.txt").exists()  # invisible until complete
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert _leftovers(tmp_path) == []


def test_atomic_dir_exception_keeps_old(tmp_path):
    target = tmp_path / "d"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(KeyError):
        with atomic_dir(target) as tmp:
            (tmp / "new.txt").write_text("new")
            raise KeyError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert _leftovers(tmp_path) == []


def test_sigkill_mid_write_keeps_old_version(tmp_path):
    """A process killed with SIGKILL in the middle of a write leaves the previous file intact."""
    path = tmp_path / "report.json"
    atomic_write_json(path, {"version": 1})
    code = textwrap.dedent(f"""
        import sys, time
        from adaseg.storage.atomic import atomic_path
        with atomic_path({str(path)!r}) as tmp:
            with open(tmp, "w") as f:
                f.write('{{"version": 2, "half')
                f.flush()
                print("ready", flush=True)
                time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(path.read_text()) == {"version": 1}
