"""Writability checks (nothing created by checking) and SIGTERM turned into an exception."""

from __future__ import annotations

import os
import signal

import pytest

from adaseg.utils.interrupt import Terminated, sigterm_raises, signal_name
from adaseg.runs.writable import NotWritableError, check_writable


def test_missing_places_are_fine_when_creatable_and_nothing_is_created(tmp_path):
    check_writable(dirs=[tmp_path / "run" / "reports"], files=[tmp_path / "run" / "log.jsonl"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "make, kwargs, expect",
    [
        (lambda p: (p / "run").write_text(""), lambda p: {"dirs": [p / "run" / "gates"]}, "is a file, not a directory"),
        (lambda p: (p / "reports").write_text(""), lambda p: {"dirs": [p / "reports"]}, "it is a file"),
        (lambda p: (p / "log.jsonl").mkdir(), lambda p: {"files": [p / "log.jsonl"]}, "it is a directory"),
    ],
    ids=["parent-is-file", "dir-is-file", "file-is-dir"],
)
def test_wrong_kind_of_place_is_named(tmp_path, make, kwargs, expect):
    make(tmp_path)
    with pytest.raises(NotWritableError, match=expect) as err:
        check_writable(**kwargs(tmp_path))
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write regardless of permission bits")
def test_permission_denied_is_named(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "log.jsonl").write_text("")
    os.chmod(tmp_path / "ro" / "log.jsonl", 0o444)
    os.chmod(tmp_path / "ro", 0o555)
    try:
        with pytest.raises(NotWritableError, match="ro"):
            check_writable(dirs=[tmp_path / "ro"])
        with pytest.raises(NotWritableError, match="log.jsonl"):
            check_writable(files=[tmp_path / "ro" / "log.jsonl"])
    finally:
        os.chmod(tmp_path / "ro", 0o755)


def test_sigterm_raises_inside_and_is_restored_after():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as err:
        with sigterm_raises():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # Python runs the handler between bytecodes, right after the kill
                pass
    assert signal_name(err.value) == "SIGTERM" and signal_name(KeyboardInterrupt()) == "SIGINT"
    assert signal.getsignal(signal.SIGTERM) == before
