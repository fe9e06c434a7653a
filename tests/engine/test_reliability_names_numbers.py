"""Names that become paths, non-finite and extreme numbers, and environment/lock edge cases,
through the CLI: each case exits non-zero with one ``Error:`` line naming the option (or
variable, or file) and its value, no traceback, and leaves every file byte-identical."""

from __future__ import annotations

import pytest
from recipe_testing import copy_run, invoke, refused, snapshot

from adaseg.runs.run_dir import RunDir
from adaseg.storage.names import BadNameError, check_name


SWEEP = ("--exits", "2", "--betas", "none", "--limit", "2", "--bootstrap", "0", "--threads", "1")
EVAL = ("--limit", "2", "--flops-images", "1", "--warmup", "0", "--timed", "1", "--threads", "1")


# --- names that become paths ---------------------------------------------------------------------

BAD_NAMES = ["..", ".", "", "a/b", "../x", "/tmp/x", "a\\b", "x\ny", "tab\there", "-rf", ".hidden", "x" * 201]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_check_name_refuses(name):
    with pytest.raises(BadNameError, match="sweep name"):
        check_name(name, what="sweep name")


@pytest.mark.parametrize("name", ["default", "run_1", "beta0.0005+pause", "A-b.c"])
def test_check_name_accepts_plain_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../../x", "-x", ".tmp-x", "x\x01"])
def test_sweep_name_that_is_not_one_plain_name(run, tmp_path, name):
    outside = snapshot(tmp_path)
    line = refused(tmp_path, "sweep", "--run", run.root, *SWEEP, "--name", name, expect="'--name'")
    assert repr(name) in line
    assert snapshot(tmp_path) == outside
    assert not (run.root / "sweeps").exists()


@pytest.mark.parametrize("name", ["..", ".", "a/b", "-x", ".x"])
def test_eval_name_that_is_not_one_plain_name(run, name):
    line = refused(run.root, "eval", "--run", run.root, "--gate", "none", *EVAL, "--name", name, expect="'--name'")
    assert repr(name) in line


def test_sweep_name_that_is_an_existing_file(run):
    (run.root / "sweeps").mkdir()
    (run.root / "sweeps" / "mine").write_text("the user's notes\n")
    refused(run.root, "sweep", "--run", run.root, *SWEEP, "--name", "mine",
            expect=f"{run.root / 'sweeps' / 'mine'} is a file or a link")
    assert (run.root / "sweeps" / "mine").read_text() == "the user's notes\n"


def test_sweep_name_that_is_a_folder_of_the_user(run):
    (run.root / "sweeps" / "mine").mkdir(parents=True)
    (run.root / "sweeps" / "mine" / "notes.txt").write_text("keep\n")
    refused(run.root, "sweep", "--run", run.root, *SWEEP, "--name", "mine", expect="without sweep.json")


def test_sweep_name_that_is_a_link(run, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "sweep.json").write_text("{}\n")
    (run.root / "sweeps").mkdir()
    (run.root / "sweeps" / "linked").symlink_to(elsewhere)
    refused(tmp_path, "sweep", "--run", run.root, *SWEEP, "--name", "linked", expect="is a file or a link")


def test_sweeps_folder_that_is_a_file(run):
    (run.root / "sweeps").write_text("not a folder\n")
    refused(run.root, "sweep", "--run", run.root, *SWEEP, expect=f"{run.root / 'sweeps'} is not a folder")


def test_atomic_dir_never_replaces_a_file(tmp_path):
    from adaseg.storage.atomic import atomic_dir

    target = tmp_path / "out"
    target.write_text("mine\n")
    with pytest.raises(FileExistsError, match="is a file"):
        with atomic_dir(target) as tmp:
            (tmp / "x").write_text("new")
    assert target.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- non-finite and extreme numbers -------------------------------------------------------------


@pytest.fixture(scope="module")
def reports(base_run, tmp_path_factory):
    """Two eval reports (with parts) of the base run, in a copy of it."""
    run = copy_run(base_run, tmp_path_factory.mktemp("reports") / "run")
    out = []
    for exit_ in ("2", "6"):
        result = invoke("eval", "--run", run.root, "--gate", "none", "--exit", exit_, *EVAL, "--name", f"e{exit_}")
        assert result.exit_code == 0, result.output
        out.append(run.reports_dir / f"eval_e{exit_}.json")
    return run, out


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "1e999"])
@pytest.mark.parametrize("flag", ["--target-gflops", "--target-ips", "--level"])
def test_sweep_non_finite_number(run, flag, value):
    line = refused(run.root, "sweep", "--run", run.root, *SWEEP, flag, value, expect=f"'{flag}'")
    assert value in line and "not a finite number" in line
    assert not (run.root / "sweeps").exists()


@pytest.mark.parametrize("args, flag", [
    (("--bootstrap", "1000000000"), "--bootstrap"),
    (("--bootstrap", "-1"), "--bootstrap"),
    (("--seed", "-1"), "--seed"),
    (("--seed", str(2**64)), "--seed"),
    (("--level", "nan"), "--level"),
    (("--level", "inf"), "--level"),
])
def test_compare_extreme_numbers(reports, args, flag):
    run, (a, b) = reports
    line = refused(run.root, "compare", a, b, *args, expect=f"'{flag}'")
    assert args[1] in line


def test_compare_bootstrap_that_would_not_fit_in_memory(reports, monkeypatch):
    import adaseg.eval.bootstrap as bs

    run, (a, b) = reports
    monkeypatch.setattr(bs, "MAX_RESAMPLE_BYTES", 1000)
    line = refused(run.root, "compare", a, b, "--bootstrap", "1000", expect="'--bootstrap'")
    assert "GiB of memory" in line and "1000 bootstrap resamples of 2 images" in line


def test_compare_normal_numbers_still_work(reports):
    run, (a, b) = reports
    result = invoke("compare", a, b, "--bootstrap", "200", "--seed", str(2**32 - 1), "--json")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("cmd, flag, value", [
    ("eval", "--bootstrap", "1000000000"),
    ("eval", "--seed", str(2**64)),
    ("eval", "--threads", str(10**12)),
    ("sweep", "--bootstrap", "1000000000"),
    ("sweep", "--seed", "-1"),
    ("sweep", "--seed", str(2**64)),
    ("sweep", "--grid-ratios", "0.2,nan"),
    ("fit-gate", "--temperature", "nan"),
    ("fit-gate", "--lr", "inf"),
    ("train-parent", "--epochs", "nan"),
    ("train-parent", "--epochs", "inf"),
    ("train-parent", "--weight-decay", "inf"),
    ("train-parent", "--backbone-lr-mult", "nan"),
    ("train-parent", "--alphas", "0.5,inf"),
    ("train-parent", "--seed", str(2**64)),
])
def test_numbers_refused_before_any_work(run, cmd, flag, value):
    extra = {"eval": ("--gate", "none", *EVAL), "sweep": SWEEP, "fit-gate": ("--beta", "0.001"),
             "train-parent": ("--resume",)}[cmd]
    if cmd == "sweep" and flag == "--grid-ratios":
        extra = (*extra, "--pause-grid")
    line = refused(run.root, cmd, "--run", run.root, *extra, flag, value, expect=f"'{flag}'")
    assert value in line


@pytest.mark.parametrize("flag, value", [("--seed", "-1"), ("--seed", str(2**64))])
def test_data_synthetic_seed_refused(tmp_path, flag, value):
    line = refused(tmp_path, "data", "synth", "--out", tmp_path / "d", flag, value, expect=f"'{flag}'")
    assert value in line
    assert not (tmp_path / "d").exists()


# --- environment and lock edge cases ------------------------------------------------------------


@pytest.mark.parametrize("variable, allowed", [("ADASEG_MSDA_BACKEND", "auto, reference, ext"),
                                               ("ADASEG_PAUSE_BACKEND", "auto, reference, triton")])
@pytest.mark.parametrize("cmd", ["eval", "derive", "sweep", "train-parent"])
def test_backend_variable_that_names_no_backend(run, monkeypatch, variable, allowed, cmd):
    monkeypatch.setenv(variable, "bogus")
    args = {"eval": ("--gate", "none", *EVAL), "derive": ("--threads", "1"), "sweep": SWEEP,
            "train-parent": ("--resume", "--iters", "3")}[cmd]
    line = refused(run.root, cmd, "--run", run.root, *args, expect=f"{variable}='bogus'")
    assert allowed in line


def test_backend_variable_help_and_doctor_still_answer(monkeypatch):
    monkeypatch.setenv("ADASEG_MSDA_BACKEND", "bogus")
    assert invoke("eval", "--help").exit_code == 0
    monkeypatch.setenv("ADASEG_MSDA_BACKEND", "Reference ")  # case and blanks: as the ops read it
    assert "Error" not in invoke("compare").output.replace("Error: give at least", "")


@pytest.mark.parametrize("cmd", ["eval", "derive", "fit-gate", "train-parent"])
def test_lock_that_is_a_directory(run, cmd):
    (run.root / ".lock").mkdir()
    (run.root / ".lock" / "inside").write_text("x\n")
    args = {"eval": ("--gate", "none", *EVAL), "derive": ("--threads", "1"), "fit-gate": ("--beta", "0.001"),
            "train-parent": ("--resume", "--iters", "3")}[cmd]
    line = refused(run.root, cmd, "--run", run.root, *args, expect=f"{run.root / '.lock'} is a directory")
    assert "Traceback" not in line
    assert (run.root / ".lock" / "inside").read_text() == "x\n"


@pytest.fixture(scope="module")
def other_run(tmp_path_factory, folder):
    """A second run of the same settings (another run id)."""
    from recipe_testing import TRAIN_FAST, invoke_json

    root = tmp_path_factory.mktemp("other") / "run"
    invoke_json("train-parent", "--data", folder, *TRAIN_FAST, "--recipe", "standard", "--run", root)
    return RunDir(root)


def test_runs_record_their_id(run, other_run):
    import json

    from adaseg.storage.checkpoint import read_checkpoint_meta

    ids = [json.loads(r.config_path.read_text())["run_id"] for r in (run, other_run)]
    assert ids[0] != ids[1]
    assert read_checkpoint_meta(run.last_path).extra["run_id"] == ids[0]


def test_resume_from_the_training_state_of_another_run(run, other_run):
    import shutil

    from adaseg.storage.checkpoint import sidecar_path

    shutil.copy2(other_run.last_path, run.last_path)
    shutil.copy2(sidecar_path(other_run.last_path), sidecar_path(run.last_path))
    refused(run.root, "train-parent", "--resume", "--iters", "3", "--threads", "1", "--run", run.root,
            expect=f"{run.last_path} is the training state of another run")


def test_resume_of_a_run_made_before_run_ids(run):
    """A state and config without run ids (written before this check) still resume."""
    import json

    from adaseg.storage.checkpoint import load_checkpoint, save_checkpoint

    tensors, meta = load_checkpoint(run.last_path)
    extra = {k: v for k, v in meta.extra.items() if k != "run_id"}
    save_checkpoint(run.last_path, tensors, kind=meta.kind, config=meta.config, extra=extra)
    config = json.loads(run.config_path.read_text())
    del config["run_id"], config["content_sha256"]  # an old config has neither
    run.config_path.write_text(json.dumps(config))
    result = invoke("train-parent", "--resume", "--iters", "3", "--threads", "1", "--run", run.root)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("args, flag", [
    (("--iters", str(10**30)), "--iters"),
    (("--iters", "1", "--batch-size", str(10**13)), "--batch-size"),
    (("--epochs", "1e300", "--batch-size", "2"), "--epochs"),
])
def test_train_parent_counts_beyond_reason(folder, tmp_path, args, flag):
    refused(tmp_path, "train-parent", "--data", folder, "--init", "none", "--threads", "1", *args,
            "--run", tmp_path / "new", expect=f"'{flag}'")
    assert not (tmp_path / "new").exists()


def test_resume_with_iters_beyond_reason(run):
    refused(run.root, "train-parent", "--resume", "--iters", str(10**30), "--threads", "1", "--run", run.root,
            expect="'--iters'")
