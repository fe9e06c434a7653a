"""Misuse that used to be accepted (issue 11): settings that cannot take effect, a resume with
nothing left to train, names that rounded a setting or left it out, a timing batch larger
than the images. Each refusal: non-zero exit, one ``Error:`` line, no traceback, and the run
directory byte-for-byte as it was (its log, which records every attempt, aside)."""

from __future__ import annotations

import json

import pytest
from recipe_testing import TRAIN_FAST, invoke, invoke_json, refused, snapshot, trained_run

from adaseg.storage.checkpoint import read_checkpoint_meta
from adaseg.runs.run_dir import RunDir

QUICK_EVAL = ["--threads", "1", "--warmup", "0", "--timed", "1"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, folder):
    """A finished 2-iteration parent (its training state at iteration 2), its derived dataset
    and a gate whose exits stop at layer 4 (--K 4)."""
    return trained_run(tmp_path_factory.mktemp("runs") / "run", folder,
                       gate_args=("--beta", "0.0005", "--K", "4", "--epochs", "2"))


def _gate_k4(run: RunDir) -> str:
    return str(run.gates_dir / "gate_beta0.0005_K4_hard-ce.safetensors")


# ---- train-parent --resume ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--iters", "1"], "--iters 1 is not beyond the 2 iterations"),
        (["--iters", "2"], "--iters 2 is not beyond the 2 iterations"),
        ([], "--iters 2 is not beyond the 2 iterations"),  # the stored --iters: the run is finished
        (["--epochs", "0.25"], "--iters 1 is not beyond the 2 iterations"),  # 0.25 x 8 images / batch 2
    ],
)
def test_resume_with_nothing_left_to_train_is_refused(run, args, expect):
    line = refused(run.root, "train-parent", "--resume", *args, "--threads", "1", "--run", run.root, expect=expect,
                   code=2)
    assert "pass --iters N with N > 2" in line
    assert read_checkpoint_meta(run.parent_path).extra["iterations"] == 2


def test_resume_with_more_iterations_trains_on(run):
    out = invoke_json("train-parent", "--resume", "--iters", "3", "--threads", "1", "--run", run.root)
    assert out["resumed_from"] == 2 and out["iterations"] == 3
    assert read_checkpoint_meta(run.parent_path).extra["iterations"] == 3


def test_resume_writes_a_missing_parent_from_a_complete_state(run):
    """A run stopped between its last training state and its parent: --resume (iters == done)
    writes the parent from the state, with no iteration run."""
    state = read_checkpoint_meta(run.last_path)
    expected = read_checkpoint_meta(run.parent_path).fingerprint
    run.parent_path.unlink()
    run.parent_path.with_suffix(".json").unlink()
    out = invoke_json("train-parent", "--resume", "--threads", "1", "--run", run.root)
    assert out["resumed_from"] == out["iterations"] == state.extra["iteration"] == 2
    assert read_checkpoint_meta(run.parent_path).fingerprint == expected


# ---- train-parent: alphas and options the recipe ignores ------------------------------------


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--alphas", "1,0.8,0.6,0.4,0.2"], "--alphas must strictly increase"),
        (["--alphas", "0.2,0.4,0.6,0.6,1"], "--alphas must strictly increase"),
        (["--alphas", "0.5,0.5,0.5,0.5,0.5"], "--alphas must strictly increase"),
        (["--recipe", "standard", "--alphas", "0.2,0.4,0.6,0.8,1"], "--recipe standard trains full depth only"),
        (["--recipe", "pause", "--alphas", "0.2,0.4,0.6,0.8,1"], "--recipe pause trains full depth only"),
        (["--recipe", "wsd", "--pause-range", "0.3:0.5"], "--pause-range applies to the pause and wsd+pause"),
        (["--recipe", "standard", "--pause-layers", "2,3"], "--pause-layers applies to the pause and wsd+pause"),
        (["--recipe", "wsd", "--aux-weight", "0.5"], "--aux-weight applies to the pause and wsd+pause"),
    ],
)
def test_train_parent_refuses_settings_that_cannot_take_effect(tmp_path, folder, args, expect):
    root = tmp_path / "new"
    refused(tmp_path, "train-parent", "--data", folder, *TRAIN_FAST, *args, "--run", root, expect=expect, code=2)
    assert not root.exists()


# ---- eval: pauses no image reaches, empty specs, options without effect -----------------------


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--exit", "2", "--pause", "3:0.4"], "pause layer 3 is not below --exit 2"),
        (["--exit", "3", "--pause", "3:0.4"], "pause layer 3 is not below --exit 3"),
        (["--exit", "4", "--pause", "2:0.3,4:0.3"], "pause layer 4 is not below --exit 4"),
        (["--gate", "K4", "--pause", "4:0.3"], "pause layer 4 is not below the gate's last exit 4"),
        (["--gate", "K4", "--pause", "2:0.3,5:0.3"], "pause layer 5 is not below the gate's last exit 4"),
        (["--pause", ""], "the pause spec is empty"),
        (["--pause", " "], "the pause spec is empty"),
        (["--pause-mode", "random"], "--pause-mode chooses which tokens pause: it needs --pause"),
        (["--seed", "3"], "--seed seeds random pausing only"),
        (["--pause", "3:0.4", "--seed", "3"], "--seed seeds random pausing only"),
    ],
)
def test_eval_refuses_settings_that_cannot_take_effect(run, args, expect):
    args = [_gate_k4(run) if a == "K4" else a for a in args]
    refused(run.root, "eval", *args, *QUICK_EVAL, "--run", run.root, expect=expect, code=2)
    assert not run.reports_dir.exists()


def test_a_pause_below_the_gates_last_exit_is_accepted_and_recorded(run):
    """The gate's images with exit 3 or 4 run past layer 2, so 2:0.5 takes effect on them."""
    report = invoke_json("eval", "--gate", _gate_k4(run), "--pause", "2:0.5", "--limit", "2", *QUICK_EVAL,
                         "--run", run.root)
    assert report["settings"]["pause"] == "2:0.5"
    assert report["settings"]["name"] == "gate_beta0.0005_K4_hard-ce_pause2-0.5_entropy_limit2"


# ---- names: exact values, every result-changing setting --------------------------------------


def test_a_beta_that_differs_in_the_tenth_digit_gets_its_own_gate(run):
    invoke_json("fit-gate", "--beta", "0.0005", "--epochs", "2", "--run", run.root)
    real = run.gates_dir / "gate_beta0.0005_K6_hard-ce.safetensors"
    before = snapshot(run.gates_dir)
    out = invoke_json("fit-gate", "--beta", "0.00050000001", "--epochs", "2", "--run", run.root)
    assert out["path"] == str(run.gates_dir / "gate_beta0.00050000001_K6_hard-ce.safetensors")
    after = snapshot(run.gates_dir)
    assert {k: after[k] for k in before} == before, "the beta 0.0005 gate was overwritten"
    assert read_checkpoint_meta(real).extra["beta"] == 0.0005
    assert read_checkpoint_meta(out["path"]).extra["beta"] == 0.00050000001


def test_reports_of_other_limits_and_exact_ratios_do_not_overwrite_each_other(run):
    small = invoke_json("eval", "--exit", "2", "--limit", "1", *QUICK_EVAL, "--run", run.root)
    assert small["settings"]["name"] == "exit2_limit1" and small["settings"]["images"] == 1
    kept = snapshot(run.reports_dir)
    full = invoke_json("eval", "--exit", "2", *QUICK_EVAL, "--run", run.root)
    assert full["settings"]["name"] == "exit2" and full["settings"]["images"] == 4
    assert {k: snapshot(run.reports_dir)[k] for k in kept} == kept
    assert json.loads(run.report_path("exit2_limit1").read_text())["settings"]["images"] == 1

    near_one = invoke_json("eval", "--gate", "none", "--pause", "5:0.9999999", "--limit", "1", *QUICK_EVAL,
                           "--run", run.root)
    assert near_one["settings"]["pause"] == "5:0.9999999"  # was recorded as 5:1, itself refused
    assert near_one["settings"]["name"] == "full_pause5-0.9999999_entropy_limit1"
    rand = invoke_json("eval", "--gate", "none", "--pause", "5:0.5", "--pause-mode", "random", "--seed", "4",
                       "--limit", "1", *QUICK_EVAL, "--run", run.root)
    assert rand["settings"]["name"] == "full_pause5-0.5_random_seed4_limit1" and rand["settings"]["seed"] == 4


# ---- eval: the timing batch is clamped to the images ----------------------------------------


def test_a_batch_larger_than_the_images_is_clamped_for_timing(run, monkeypatch):
    import adaseg.data

    sizes = []
    real = adaseg.data.collate

    def counting(samples):
        sizes.append(len(samples))
        return real(samples)

    monkeypatch.setattr(adaseg.data, "collate", counting)
    result = invoke("eval", "--gate", "none", "--limit", "2", "--batch-size", "100000", *QUICK_EVAL,
                    "--run", run.root)
    assert result.exit_code == 0, result.output
    assert "--batch-size 100000 is more than the 2 evaluated images; images/s is measured at batch 2" in result.output
    assert max(sizes) == 2, sizes
    report = json.loads(run.report_path("full_limit2").read_text())
    assert report["throughput"]["batch_size"] == 2 and report["settings"]["timing_batch_size"] == 2
    assert report["settings"]["batch_size"] == 100000
