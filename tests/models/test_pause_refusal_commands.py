"""A model that cannot pause tokens (``pause_refusal`` set: RT-M2F, whose layers after AIFI are
dense convolutions) refuses every pause plan on every path that takes one, in one line naming
why, with a non-zero exit and nothing written: ``train-parent`` with a pausing recipe (the
default ``wsd+pause`` included: the run directory is not even created), ``eval --pause``,
``sweep --pause`` / ``--pause-grid``, ``predict --pause``, ``bench model``'s pausing arms,
``adaseg.evaluate(pause=...)`` and ``adaseg.Predictor(pause=...)``. The forward's refusal
itself is the contract test's (tests/models/test_adaptive_contract.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from recipe_testing import TRAIN_FAST, invoke, invoke_json, refused

import adaseg
from adaseg.runs.run_dir import RunDir

# the reason, as the user reads it (the model's pause_refusal names the rt encoder)
WHY = "cannot pause tokens: its encoder (rt: RT-DETR's AIFI + CCFM) runs dense convolutions"


@pytest.fixture(scope="module")
def rt_run(folder, tmp_path_factory):
    """A 2-iteration RT-M2F parent trained the way its README commands train it (--recipe standard)."""
    root = tmp_path_factory.mktemp("runs") / "rt"
    invoke_json("train-parent", "--model", "m2f_rt_tiny", "--data", folder, *TRAIN_FAST, "--recipe", "standard",
                "--run", root)
    return RunDir(root)


@pytest.mark.parametrize("recipe", [(), ("--recipe", "wsd+pause"), ("--recipe", "pause")],
                         ids=["default", "wsd+pause", "pause"])
def test_train_parent_refuses_a_pausing_recipe_before_the_run_exists(folder, tmp_path, recipe):
    run = tmp_path / "run"
    line = refused(run, "train-parent", "--model", "m2f_rt_tiny", "--data", folder, *TRAIN_FAST, *recipe,
                   "--run", run, expect="train it with --recipe standard or wsd", code=2)
    name = recipe[1] if recipe else "wsd+pause"
    assert f"--recipe {name} trains with pausing (PAUMER), but m2f_rt_tiny {WHY}" in line
    assert not run.exists()


@pytest.mark.parametrize("command", [
    ("eval", "--pause", "2:0.5", "--gate", "none"),
    ("eval", "--pause", "1:0.3,3:0.3", "--pause-mode", "random", "--exit", "5"),
    ("sweep", "--pause", "2:0.5", "--betas", "none", "--bootstrap", "0"),
    ("sweep", "--pause-grid", "--betas", "none", "--bootstrap", "0"),
], ids=["eval", "eval-random", "sweep-pause", "sweep-grid"])
def test_eval_and_sweep_refuse_pausing_in_one_line(rt_run, command):
    line = refused(rt_run.root, *command, "--run", rt_run.root, "--threads", "1", expect=f"Mask2Former {WHY}")
    assert "--pause" in line


def test_predict_refuses_pausing_and_writes_nothing(rt_run, tmp_path):
    out = tmp_path / "out"
    result = invoke("predict", "--run", rt_run.root, "--out", out, "--limit", "1", "--gate", "none",
                    "--pause", "2:0.5", "--threads", "1")
    assert result.exit_code != 0 and result.output.count("Error:") == 1, result.output
    assert "Traceback" not in result.output, result.output
    assert f"Mask2Former {WHY}" in " ".join(result.output.split()), result.output
    assert not out.exists() or not any(Path(out).iterdir())


def test_the_python_api_refuses_as_the_cli(rt_run):
    with pytest.raises(ValueError, match=r"--pause 2:0\.5: Mask2Former cannot pause tokens: its encoder \(rt: "):
        adaseg.evaluate(rt_run.root, gate="none", pause="2:0.5")
    with pytest.raises(ValueError, match=r"Mask2Former cannot pause tokens: its encoder \(rt: "):
        adaseg.Predictor(str(rt_run.root), gate="none", pause="2:0.5")
    adaseg.Predictor(str(rt_run.root), gate="none")  # the same parent without a pause plan loads


def test_bench_model_refuses_the_pausing_arms():
    result = invoke("bench", "model", "--model", "m2f_rt_tiny", "--size", "64", "--batch", "1", "--repeats", "1",
                    "--warmup", "0", "--arm", "lean", "--scope", "encoder", "--threads", "1")
    assert result.exit_code != 0 and result.output.count("Error:") == 1, result.output
    assert f"the pausing arms (lean) time a pause plan: Mask2Former {WHY}" in " ".join(result.output.split())
    assert "--arm exits" in result.output
