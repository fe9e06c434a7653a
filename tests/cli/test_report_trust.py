"""Reports are trusted on reuse only when they prove themselves (issue 25): every eval report and
config.json carries a content hash checked when read, a report records the identity of the
images it scored, and sweep reuse and compare refuse what does not match with one line.

Battery style: each refusal asserts a non-zero exit, one ``Error:`` line, no traceback and every
file of the run byte-identical afterwards (``refused``); the one documented re-evaluation
asserts what changed and nothing else."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from recipe_testing import SYNTH, copy_run, invoke, refused, snapshot

from adaseg.eval.image_parts import parts_path_for
from adaseg.storage.integrity import HASH_KEY

LIMIT = ("--limit", "2")
# The sweep whose reports the tests edit: full depth, exit 2 and the base run's gate (beta 0.0005).
SWEEP = ("sweep", "--exits", "2", "--betas", "0.0005", *LIMIT, "--bootstrap", "0", "--threads", "1")


def _synth(path, seed: int) -> str:
    """A synthetic folder at ``path`` (replaced if there): with another seed, the same image ids
    and categories but other images."""
    from adaseg.data.synthetic.generate import write_synthetic

    shutil.rmtree(path, ignore_errors=True)
    return write_synthetic(str(path), workers=1, **{**SYNTH, "seed": seed})


@pytest.fixture(scope="module")
def swept(base_run, tmp_path_factory):
    """A copy of the module's run after one SWEEP (three reports with per-image parts) and one
    eval of full depth on a folder whose image ids are the run's but whose images are not."""
    root = tmp_path_factory.mktemp("trust")
    run = copy_run(base_run, root / "run")
    result = invoke(*SWEEP, "--run", run.root)
    assert result.exit_code == 0, result.output + repr(result.exception)
    other = _synth(root / "other", seed=1)
    result = invoke("eval", "--gate", "none", *LIMIT, "--data", other, "--threads", "1", "--run", run.root)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return run


@pytest.fixture
def trun(swept, tmp_path):
    return copy_run(swept, tmp_path / "run")


def _edit(path, change) -> None:
    """Change a JSON file in place as a user's editor would (its recorded hash left as it was)."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))


def _reports(run):
    return run.report_path("full_limit2"), run.report_path("exit2_limit2")


# --- the hash itself -------------------------------------------------------------------------


def test_json_hash_is_sha256_of_canonical_json_and_survives_reformatting(tmp_path):
    from adaseg.storage.integrity import IntegrityError, check_json, seal_json

    sealed = seal_json({"b": [1, 2.5], "a": {"x": None}})
    # the definition, by hand: SHA-256 over a domain tag and sorted, space-free JSON
    expected = hashlib.sha256(b'adaseg-json-v1\n{"a":{"x":null},"b":[1,2.5]}').hexdigest()
    assert sealed[HASH_KEY] == expected
    reformatted = json.loads(json.dumps(sealed, indent=4))
    assert check_json(reformatted, path="f.json", hint="h") is True
    assert check_json({"a": 1}, path="f.json", hint="h") is False  # no hash: the caller decides
    with pytest.raises(IntegrityError, match="f.json was edited or damaged .*; h$"):
        check_json({**reformatted, "b": [1, 2.50001]}, path="f.json", hint="h")


def test_reports_record_their_hash_and_the_images_they_scored(swept):
    from adaseg.data import build_dataset
    from adaseg.runs.run_data import images_identity
    from adaseg.storage.integrity import check_json

    full, exit2 = _reports(swept)
    a, b = json.loads(full.read_text()), json.loads(exit2.read_text())
    assert check_json(a, path=full, hint="") and check_json(b, path=exit2, hint="")
    assert a["info"]["images_sha256"] == b["info"]["images_sha256"]
    config = swept.read_config()
    dataset = build_dataset(config["data"], "val")
    assert a["info"]["images_sha256"] == images_identity(dataset, 2) != images_identity(dataset, 3)
    other = json.loads(swept.report_path("full_limit2_data-other").read_text())
    assert other["info"]["images_sha256"] != a["info"]["images_sha256"]
    assert json.loads(swept.config_path.read_text())[HASH_KEY]


def test_images_identity_follows_content_not_path(swept, tmp_path):
    from adaseg.data import build_dataset
    from adaseg.runs.run_data import images_identity

    original = swept.read_config()["data"]
    copy = shutil.copytree(original, tmp_path / "copy")
    same = images_identity(build_dataset(str(copy), "val"), 4)
    assert same == images_identity(build_dataset(original, "val"), 4)
    label = sorted((copy / "panoptic_val").glob("*.png"))[0]  # one changed label byte: another identity
    data = bytearray(label.read_bytes())
    data[-20] ^= 1
    label.write_bytes(bytes(data))
    assert images_identity(build_dataset(str(copy), "val"), 4) != same


# --- compare -----------------------------------------------------------------------------------


def test_compare_refuses_an_edited_figure(trun):
    full, exit2 = _reports(trun)
    _edit(exit2, lambda d: d["metrics"].update(PQ=0.99))
    refused(trun.root, "compare", full, exit2, expect=f"{exit2} was edited or damaged after adaseg wrote it")


def test_compare_refuses_a_parts_record_pointed_at_another_reports_parts(trun):
    full, exit2 = _reports(trun)
    record = json.loads(full.read_text())["parts"]  # the full report's parts, with their correct hash
    _edit(exit2, lambda d: d.update(parts=record))
    refused(trun.root, "compare", full, exit2, expect="was edited or damaged")


def test_compare_refuses_reports_of_other_images_sharing_ids(trun):
    full = trun.report_path("full_limit2")
    other = trun.report_path("full_limit2_data-other")
    refused(trun.root, "compare", full, other, expect="scored other images than")


def test_compare_refuses_a_report_without_content_hash(trun):
    full, exit2 = _reports(trun)
    _edit(exit2, lambda d: d.pop(HASH_KEY))
    refused(trun.root, "compare", full, exit2, expect="records no content hash (written by an older adaseg)")


# --- sweep reuse ---------------------------------------------------------------------------------


def test_sweep_refuses_an_edited_report(trun):
    _, exit2 = _reports(trun)
    _edit(exit2, lambda d: d["gflops"]["gflops"]["encoder"].update(mean=1e-9))
    refused(trun.root, *SWEEP, "--run", trun.root, expect=f"{exit2} was edited or damaged")


def test_sweep_refuses_a_parts_record_pointed_at_another_points_parts(trun):
    full, exit2 = _reports(trun)
    record = json.loads(full.read_text())["parts"]
    _edit(exit2, lambda d: d.update(parts=record))
    refused(trun.root, *SWEEP, "--bootstrap", "100", "--run", trun.root, expect="was edited or damaged")


def test_sweep_refuses_a_gate_corrupted_after_its_report(trun):
    gate = trun.gates_dir / "gate_beta0.0005_K6_hard-ce.safetensors"
    data = bytearray(gate.read_bytes())
    data[-3] ^= 0x10
    gate.write_bytes(bytes(data))
    refused(trun.root, *SWEEP, "--run", trun.root, expect=f"{gate} is corrupt")


def test_sweep_refuses_corrupt_parts(trun):
    _, exit2 = _reports(trun)
    parts = parts_path_for(exit2)
    data = bytearray(parts.read_bytes())
    data[-3] ^= 0x10
    parts.write_bytes(bytes(data))
    refused(trun.root, *SWEEP, "--bootstrap", "100", "--run", trun.root, expect="is corrupt")


def test_sweep_reuses_intact_reports(trun):
    before = snapshot(trun.root)
    result = invoke(*SWEEP, "--run", trun.root)
    assert result.exit_code == 0, result.output
    rows = json.loads((trun.root / "sweeps" / "default" / "sweep.json").read_text())["rows"]
    assert all(r["reused"] for r in rows)
    after = snapshot(trun.root)
    assert {k: v for k, v in after.items() if not k.startswith("sweeps/")} == \
        {k: v for k, v in before.items() if not k.startswith("sweeps/")}


def test_sweep_re_evaluates_when_the_data_path_now_holds_other_images(trun, tmp_path):
    """The documented choice for an intact but stale report: evaluated again and replaced."""
    data = _synth(tmp_path / "data", seed=0)
    args = ("sweep", "--exits", "2", "--betas", "none", *LIMIT, "--bootstrap", "0", "--threads", "1",
            "--data", data, "--run", trun.root)
    assert invoke(*args).exit_code == 0
    report = trun.report_path("exit2_limit2_data-data")
    first = json.loads(report.read_text())["info"]["images_sha256"]
    _synth(tmp_path / "data", seed=1)  # the same path, other images with the same ids
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    rows = json.loads((trun.root / "sweeps" / "default" / "sweep.json").read_text())["rows"]
    assert not any(r["reused"] for r in rows)
    assert json.loads(report.read_text())["info"]["images_sha256"] != first


# --- config.json -----------------------------------------------------------------------------------


def test_an_edited_config_is_refused(trun):
    _edit(trun.config_path, lambda d: d.update(data="synthetic"))
    refused(trun.root, "eval", "--gate", "none", *LIMIT, "--threads", "1", "--run", trun.root,
            expect=f"{trun.config_path} was edited or damaged")
    refused(trun.root, "derive", "--threads", "1", "--run", trun.root, expect="was edited or damaged")


@pytest.mark.parametrize("which", ["report", "parts"])
def test_a_folder_where_a_report_belongs_is_refused_before_any_work(trun, which):
    path = trun.report_path("exit3_limit2")
    (path if which == "report" else parts_path_for(path)).mkdir()
    refused(trun.root, "eval", "--exit", "3", *LIMIT, "--threads", "1", "--run", trun.root,
            expect="is a folder or a link, not a file adaseg wrote")
    refused(trun.root, "sweep", "--exits", "3", "--betas", "none", *LIMIT, "--bootstrap", "0", "--threads", "1",
            "--run", trun.root, expect="is a folder or a link, not a file adaseg wrote")
