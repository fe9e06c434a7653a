"""``adaseg predict --out``: the folder is the user's (issue 25). --overwrite replaces only an
unchanged earlier output (its predict.json manifest, checked by hash), a link is refused, --out
and earlier outputs are never inputs, a second predict into one --out is refused while the
first holds its lock, and SIGTERM/SIGINT leave no ``.tmp-*`` folder and the earlier output as
it was.

Battery style: each refusal asserts a non-zero exit, one ``Error:`` line, no traceback and every
file byte-identical afterwards (``refused``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from recipe_testing import invoke, refused, snapshot

from adaseg.data.coco_panoptic import PanopticLayout


def _images(root: Path, folder: str, n: int = 2) -> Path:
    """``root`` holding ``n`` of the val images (copies, cycling)."""
    src = sorted(p for p in Path(PanopticLayout(folder, "val").image_dir).iterdir() if p.is_file())
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        shutil.copy(src[i % len(src)], root / f"img{i:03d}.png")
    return root


def _predict(out: Path, run, *args) -> object:
    return invoke("predict", "--run", run, *args, "--out", out, "--gate", "none", "--threads", "1", "--sheet", "0")


@pytest.fixture
def earlier(tmp_path, run, folder):
    """(images, out): an earlier, complete `adaseg predict` output of two images."""
    user = _images(tmp_path / "user", folder)
    out = tmp_path / "out"
    result = _predict(out, run, user)
    assert result.exit_code == 0, result.output
    return user, out


def _summary(out: Path) -> dict:
    return json.loads((out / "predict.json").read_text())


def test_manifest_lists_every_file_with_its_sha256(earlier):
    import hashlib

    _, out = earlier
    manifest = _summary(out)["manifest"]
    on_disk = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in out.rglob("*") if p.is_file() and p.name != "predict.json"}
    assert manifest == on_disk and len(on_disk) >= 4


def test_overwrite_replaces_an_unchanged_earlier_output(earlier, run):
    user, out = earlier
    result = _predict(out, run, user / "img000.png", "--overwrite")
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in _summary(out)["images"]] == ["img000"]
    assert not (out / "overlay" / "img001.png").exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no .tmp-*, no lock file


def test_overwrite_refuses_a_file_the_user_added(earlier, run):
    user, out = earlier
    (out / "overlay" / "my_notes.txt").write_text("mine")
    refused(out.parent, "predict", "--run", run, user, "--out", out, "--overwrite", "--gate", "none",
            expect=f"{out / 'overlay' / 'my_notes.txt'} was not written by adaseg predict")


def test_overwrite_refuses_a_user_folder_inside_an_output(earlier, run):
    user, out = earlier
    (out / "mine").mkdir()
    refused(out.parent, "predict", "--run", run, user, "--out", out, "--overwrite", "--gate", "none",
            expect="is a folder adaseg predict did not write")


def test_overwrite_refuses_an_output_file_changed_since(earlier, run):
    user, out = earlier
    png = out / "overlay" / "img000.png"
    png.write_bytes(png.read_bytes() + b"edited")
    refused(out.parent, "predict", "--run", run, user, "--out", out, "--overwrite", "--gate", "none",
            expect=f"{png} was changed since adaseg predict wrote it")


def test_overwrite_refuses_a_link_inside_an_output(earlier, run, tmp_path):
    user, out = earlier
    (tmp_path / "precious.txt").write_text("keep")
    (out / "overlay" / "link.png").symlink_to(tmp_path / "precious.txt")
    refused(tmp_path, "predict", "--run", run, user, "--out", out, "--overwrite", "--gate", "none",
            expect="is a link adaseg predict did not write")


@pytest.mark.parametrize("summary, expect", [
    ('{"settings": {}}', "holds files adaseg predict did not write"),  # a user's own predict.json
    (None, "thesis.tex was not written by adaseg predict"),  # a real one, copied into the user's folder
])
def test_overwrite_refuses_a_user_folder_merely_holding_predict_json(earlier, run, tmp_path, summary, expect):
    user, out = earlier
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    if summary is None:
        shutil.copy(out / "predict.json", mine / "predict.json")
    else:
        (mine / "predict.json").write_text(summary)
    refused(tmp_path, "predict", "--run", run, user, "--out", mine, "--overwrite", "--gate", "none", expect=expect)


def test_overwrite_refuses_an_edited_predict_json(earlier, run):
    user, out = earlier
    data = _summary(out)
    data["manifest"]["extra.txt"] = data["manifest"]["overlay/img000.png"]
    (out / "predict.json").write_text(json.dumps(data))
    (out / "extra.txt").write_bytes((out / "overlay" / "img000.png").read_bytes())
    refused(out.parent, "predict", "--run", run, user, "--out", out, "--overwrite", "--gate", "none",
            expect="its predict.json was not written by adaseg predict, was changed since")


def test_out_that_is_a_link_is_refused_not_followed(earlier, run, tmp_path):
    user, out = earlier
    link = tmp_path / "link"
    link.symlink_to(out)
    for extra in ((), ("--overwrite",)):
        refused(tmp_path, "predict", "--run", run, user, "--out", link, *extra, "--gate", "none",
                expect=f"--out {link} is a symbolic link")
    assert link.is_symlink()


def test_out_inside_input_does_not_predict_earlier_outputs(tmp_path, run, folder):
    user = _images(tmp_path / "user", folder)
    out = user / "out"
    first = _predict(out, run, user)
    assert first.exit_code == 0, first.output
    assert [r["name"] for r in _summary(out)["images"]] == ["img000", "img001"]
    again = _predict(out, run, user, "--overwrite")  # --out inside INPUT, holding the first output
    assert again.exit_code == 0, again.output
    assert [r["name"] for r in _summary(out)["images"]] == ["img000", "img001"]
    assert "left out" in again.output
    other = _predict(user / "out2", run, user)  # another --out: the first output is still no input
    assert other.exit_code == 0, other.output
    assert [r["name"] for r in _summary(user / "out2")["images"]] == ["img000", "img001"]


def _hold_lock(out: Path) -> subprocess.Popen:
    code = ("import sys, time; from adaseg.runs.lock import folder_lock; "
            "folder_lock(sys.argv[1], option='--out').acquire(); print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_predict_into_one_out_is_refused(earlier, run):
    user, out = earlier
    holder = _hold_lock(out)
    try:
        refused(out, "predict", "--run", run, user, "--out", out, "--overwrite", "--gate", "none",
                expect=f"{out} is in use by")
    finally:
        holder.kill()
        holder.wait()


def _interrupt(tmp_path: Path, run, images: Path, out: Path, sig: int, *extra: str) -> subprocess.CompletedProcess:
    """``adaseg predict`` in a process of its own, sent ``sig`` once its temporary folder exists."""
    cmd = [sys.executable, "-m", "adaseg", "predict", "--run", str(run), str(images), "--out", str(out),
           "--gate", "none", "--threads", "1", "--sheet", "0", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # SIGINT must reach Python's default handler (a child inherits SIG_IGN from a shell that ran
    # pytest in the background, and then predicts to the end, ignoring the signal)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".tmp-out.") for p in out.parent.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "predict ended before it could be interrupted"
        time.sleep(0.05)
    time.sleep(0.3)  # inside the loop over images
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, output)


@pytest.mark.parametrize("sig, overwrite", [(signal.SIGTERM, True), (signal.SIGINT, False)],
                         ids=["SIGTERM-overwrite", "SIGINT-new-folder"])
def test_a_signal_leaves_no_tmp_folder_and_the_earlier_output_intact(earlier, run, folder, tmp_path, sig, overwrite):
    """(One process per case: the two signals unwind through the same code, so each is sent once.)"""
    _, out = earlier
    many = _images(tmp_path / "many", folder, n=300)
    if not overwrite:
        out = tmp_path / "fresh" / "out"
        out.parent.mkdir()
    before = snapshot(out.parent, skip=())
    done = _interrupt(tmp_path, run, many, out, sig, *(("--overwrite",) if overwrite else ()))
    assert done.returncode == 128 + sig, done.stdout
    assert "Traceback" not in done.stdout and f"interrupted by {signal.Signals(sig).name}" in done.stdout
    assert snapshot(out.parent, skip=()) == before  # the earlier output byte for byte, or still no folder
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # no .tmp-*, no lock file
