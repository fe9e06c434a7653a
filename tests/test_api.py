"""adaseg.evaluate / adaseg.load_run choose the gate exactly as ``adaseg eval`` does (one shared
rule, :func:`adaseg.runs.gate_file.choose_gate`): ``auto`` is the latest gate when the run has
one and no fixed exit is given, else none; and they refuse what the command line refuses."""

from __future__ import annotations

import inspect
import shutil

import pytest
import torch
from recipe_testing import copy_run, invoke, invoke_json, trained_run, write_folder

import adaseg
from adaseg.runs.gate_file import GateChoiceError, choose_gate, load_gate
from adaseg.runs.run_dir import MissingStepError

FAST = dict(limit=2, batch_size=2, warmup=0, timed=1)
FAST_CLI = ("--limit", "2", "--batch-size", "2", "--warmup", "0", "--timed", "1", "--threads", "1")


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """A 2-iteration parent with two gates; the beta=0 one is fitted last (the latest)."""
    folder = write_folder(tmp_path_factory.mktemp("data") / "synth")
    run = trained_run(tmp_path_factory.mktemp("runs") / "gated", folder)
    invoke_json("fit-gate", "--beta", "0", "--epochs", "2", "--run", run.root)
    assert len(run.gate_files()) == 2
    return run


@pytest.fixture(scope="module")
def ungated(gated, tmp_path_factory):
    run = copy_run(gated, tmp_path_factory.mktemp("runs") / "ungated")
    shutil.rmtree(run.gates_dir)
    assert not run.has("gate")
    return run



def test_latest_gate_is_the_last_fitted(gated):
    latest = choose_gate(gated, "latest")
    assert latest in gated.gate_files() and "beta0_" in latest.name


def test_the_defaults_are_auto_everywhere():
    from adaseg.cli.eval import eval_cmd

    cli_default = next(p.default for p in eval_cmd.params if p.name == "gate")
    assert cli_default == "auto"
    assert inspect.signature(adaseg.evaluate).parameters["gate"].default == cli_default
    assert inspect.signature(adaseg.load_run).parameters["gate"].default == cli_default


@pytest.mark.parametrize("which,api,cli", [
    ("gated", {}, ()),                                    # auto -> the latest gate
    ("gated", {"gate": "auto"}, ("--gate", "auto")),
    ("gated", {"exit": 2}, ("--exit", "2")),              # auto with a fixed exit -> no gate
    ("gated", {"gate": "none"}, ("--gate", "none")),
    ("ungated", {}, ()),                                  # auto without a gate -> no gate, full depth
    ("ungated", {"exit": 3}, ("--exit", "3")),
], ids=["gated-default", "gated-auto", "gated-exit2", "gated-none", "ungated-default", "ungated-exit3"])
def test_evaluate_picks_the_gate_adaseg_eval_picks(which, api, cli, request):
    run = request.getfixturevalue(which)
    expected = invoke_json("eval", *cli, *FAST_CLI, "--run", run.root)
    report = adaseg.evaluate(run.root, **api, **FAST)
    assert report.settings["gate"] == expected["settings"]["gate"]
    assert report.settings["exit"] == expected["settings"]["exit"]
    assert report.settings["name"] == expected["settings"]["name"]
    assert report.exits == expected["exits"] and report.metrics == expected["metrics"]
    chosen = choose_gate(run, api.get("gate", "auto"), exit=api.get("exit"))
    assert report.settings["gate"] == (None if chosen is None else str(chosen))
    if which == "gated" and not api:
        assert chosen == choose_gate(run, "latest")  # the default used the gate, not full depth


def test_load_run_attaches_the_gate_auto_picks(gated, ungated):
    model = adaseg.load_run(gated.root)
    _, info = adaseg.load_parent(gated.parent_path)
    latest, _ = load_gate(choose_gate(gated, "latest"), parent_fingerprint=info["fingerprint"])
    assert model.gate is not None and torch.equal(model.gate.linear.weight, latest.linear.weight)
    assert adaseg.load_run(ungated.root).gate is None


def test_a_gate_with_a_fixed_exit_is_refused_like_the_cli(gated):
    result = invoke("eval", "--gate", "latest", "--exit", "2", *FAST_CLI, "--run", gated.root)
    assert result.exit_code == 2 and "--exit and --gate are exclusive" in result.output
    with pytest.raises(GateChoiceError, match="--exit and --gate are exclusive"):
        adaseg.evaluate(gated.root, gate="latest", exit=2, **FAST)
    with pytest.raises(GateChoiceError):
        choose_gate(gated, str(gated.gate_files()[0]), exit=4)


def test_latest_without_a_gate_is_refused_like_the_cli(ungated):
    result = invoke("eval", "--gate", "latest", *FAST_CLI, "--run", ungated.root)
    assert result.exit_code == 1 and "fit-gate" in result.output
    with pytest.raises(MissingStepError, match="fit-gate"):
        adaseg.evaluate(ungated.root, gate="latest", **FAST)


@pytest.mark.parametrize("api,cli,match", [
    ({"pause_mode": "random"}, ("--pause-mode", "random"), "pause_mode .* needs pause"),
    ({"pause_mode": "entropy"}, ("--pause-mode", "entropy"), "pause_mode .* needs pause"),
    ({"seed": 3}, ("--seed", "3"), "seed seeds random pausing only"),
    ({"pause": "3:0.4", "seed": 3}, ("--pause", "3:0.4", "--seed", "3"), "seed seeds random pausing only"),
    ({"pause": "3:0.4", "pause_mode": "lowest"}, ("--pause", "3:0.4", "--pause-mode", "lowest"), "pause_mode must be"),
    ({"batch_size": 0}, ("--batch-size", "0"), "batch_size must be at least 1"),
    ({"limit": 0}, ("--limit", "0"), "limit must be at least 1"),
    ({"flops_images": 0}, ("--flops-images", "0"), "flops_images must be at least 1"),
    ({"warmup": -1}, ("--warmup", "-1"), "warmup must be at least 0"),
    ({"timed": 0}, ("--timed", "0"), "timed must be at least 1"),
    ({"limit": 2.5}, ("--limit", "2.5"), "limit must be an integer"),
    ({"exit": "2"}, ("--exit", "two"), "exit must be an integer"),
    ({"gate": 3}, None, "gate must be"),
    ({"bootstrap": 100}, None, "unknown option"),
])
def test_evaluate_refuses_what_the_cli_refuses(ungated, api, cli, match):
    options = {**FAST, **api}
    with pytest.raises(ValueError, match=match):
        adaseg.evaluate(ungated.root, **options)
    if cli is not None:
        result = invoke("eval", *cli, "--run", ungated.root, "--threads", "1")
        assert result.exit_code == 2, result.output
