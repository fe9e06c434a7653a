"""Progress and logging: bar on a terminal, plain lines off one, silence with --quiet, and a
parseable JSONL log in every case (rank 0 only)."""

from __future__ import annotations

import io
import json
import math

import pytest
from rich.console import Console

from adaseg.utils.progress import JsonlLog, Reporter


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _reporter(tmp_path, *, terminal=False, quiet=False, enabled=True, every_s=10.0):
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=terminal, width=120)
    clock = FakeClock()
    log = JsonlLog(tmp_path / "log.jsonl", command="test")
    rep = Reporter(quiet=quiet, log=log, console=console, enabled=enabled, every_s=every_s, clock=clock)
    return rep, buf, clock


def _events(tmp_path):
    path = tmp_path / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_plain_lines_off_a_terminal(tmp_path):
    rep, buf, clock = _reporter(tmp_path)
    with rep.progress(total=10, description="train", unit="it") as p:
        for step in range(10):
            clock.t += 3.0  # 3 s per step
            p.update(loss=1.0 / (step + 1))
    lines = buf.getvalue().splitlines()
    # a line whenever 10 s passed since the last one (steps 4 and 8: t=112, 124) + the final one
    assert lines == [
        "train: 4/10 (40%) 0.33 it/s eta 0:00:18 loss=0.25",
        "train: 8/10 (80%) 0.33 it/s eta 0:00:06 loss=0.125",
        "train: 10/10 (100%) 0.33 it/s eta 0:00:00 loss=0.1",
    ]
    events = _events(tmp_path)
    assert [e["event"] for e in events] == ["progress_start", "progress", "progress", "progress_end"]
    assert events[-1]["completed"] == 10 and events[-1]["seconds"] == pytest.approx(30.0) and events[-1]["ok"] is True
    assert events[1]["loss"] == 0.25 and events[1]["eta_s"] == pytest.approx(18.0)
    assert all(e["command"] == "test" and "time" in e for e in events)


def test_terminal_shows_a_bar(tmp_path):
    rep, buf, clock = _reporter(tmp_path, terminal=True)
    assert rep.interactive
    with rep.progress(total=4, description="derive", unit="img") as p:
        for _ in range(4):
            clock.t += 1.0
            p.update(pq=0.5)
    out = buf.getvalue()
    assert "derive" in out and "4/4" in out and "pq=0.5" in out and "\x1b[" in out


def test_quiet_prints_nothing_but_logs(tmp_path):
    rep, buf, clock = _reporter(tmp_path, quiet=True)
    rep.info("hello", n=1)
    with rep.progress(total=2, description="x") as p:
        clock.t += 20
        p.update()
        p.update()
    assert buf.getvalue() == ""
    events = _events(tmp_path)
    assert events[0] == {**events[0], "event": "info", "message": "hello", "n": 1}
    assert events[-1]["event"] == "progress_end"


def test_other_ranks_write_nothing(tmp_path):
    rep, buf, _ = _reporter(tmp_path, enabled=False)
    rep.info("hello")
    with rep.progress(total=1, description="x") as p:
        p.update()
    assert buf.getvalue() == "" and not (tmp_path / "log.jsonl").exists()


def test_failure_is_logged(tmp_path):
    rep, buf, _ = _reporter(tmp_path)
    with pytest.raises(RuntimeError):
        with rep.progress(total=3, description="x") as p:
            p.update()
            raise RuntimeError("boom")
    assert _events(tmp_path)[-1]["ok"] is False
    assert buf.getvalue() == ""  # no misleading final line


def test_log_values_are_always_json(tmp_path):
    import torch

    log = JsonlLog(tmp_path / "sub" / "log.jsonl", command="c")
    log.write("e", nan=math.nan, inf=math.inf, t=torch.tensor(2.5), path=tmp_path, nested={"a": [math.nan]})
    (event,) = _events(tmp_path / "sub")
    assert event["nan"] == "nan" and event["inf"] == "inf" and event["t"] == 2.5
    assert event["path"] == str(tmp_path) and event["nested"] == {"a": ["nan"]}


def test_eta_unknown_before_progress(tmp_path):
    rep, _, _ = _reporter(tmp_path)
    with rep.progress(total=5, description="x") as p:
        assert p.speed == 0.0 and p.eta == math.inf and "eta ?" in p.line()


def test_for_run_logs_into_the_run_directory(tmp_path):
    from adaseg.runs.run_dir import RunDir

    run = RunDir(tmp_path / "r")
    Reporter.for_run(run, command="derive", quiet=True).info("x")
    Reporter.for_run(run, command="derive", enabled=False).info("y")  # rank 1: nothing
    (event,) = [json.loads(line) for line in run.log_path.read_text().splitlines()]
    assert event["command"] == "derive" and event["message"] == "x"
