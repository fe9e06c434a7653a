"""Shared CLI options: --pause, --device, --seed, --run parse or fail with one clear line."""

from __future__ import annotations

import click
import pytest
import torch
from click.testing import CliRunner

from adaseg.cli.options import (
    check_pause_depth,
    data_option,
    device_option,
    json_option,
    pause_option,
    quiet_option,
    run_option,
    seed_option,
)
from adaseg.models.adaptive.plan import PausePlan


@click.command()
@run_option
@data_option
@device_option
@quiet_option
@json_option
@pause_option
@seed_option
@click.option("--depth", type=int, default=6)
def probe(run, data, device, quiet, as_json, pause, seed, depth):
    check_pause_depth(pause, depth)
    click.echo(repr((run, data, str(device), quiet, as_json, str(pause) if pause else None, seed)))


def _run(args):
    return CliRunner().invoke(probe, args)


def test_defaults():
    result = _run([])
    assert result.exit_code == 0, result.output
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert result.output.strip() == repr(("runs/default", "synthetic", expected_device, False, False, None, 0))


def test_values_parsed():
    result = _run(["--run", "r1", "--data", "x", "--device", "cpu", "-q", "--json", "--pause", "3:0.4,5:0.3", "--seed", "7"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == repr(("r1", "x", "cpu", True, True, "3:0.4,5:0.3", 7))


@pytest.mark.parametrize("spec", ["none", "NONE"])
def test_pause_none(spec):
    result = _run(["--pause", spec])
    assert result.exit_code == 0 and result.output.strip().endswith("None, 0)")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pause", "5:0.3,3:0.4"], "pause layers must strictly increase, got 3 after 5"),
        (["--pause", "3:1.2"], "pause ratio must be in (0, 1), got 1.2 at layer 3"),
        (["--pause", "3:0"], "pause ratio must be in (0, 1)"),
        (["--pause", "garbage"], "is not layer:ratio"),
        (["--pause", "3:x"], "is not layer:ratio"),
        (["--pause", "7:0.3"], "pause layer 7 must be below the encoder depth 6"),
        (["--pause", "6:0.3"], "pause layer 6 must be below the encoder depth 6"),
        (["--device", "tpu"], "is not a device"),
        (["--device", "meta"], "only cpu and cuda"),
        (["--seed", "-1"], "Invalid value for '--seed'"),
        (["--pause", ""], "the pause spec is empty"),
        (["--pause", "  "], "the pause spec is empty"),
    ],
)
def test_bad_values_one_line(args, message):
    result = _run(args)
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert result.output.count("Error:") == 1
    assert ("--pause" in result.output) == (args[0] == "--pause")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_an_error():
    result = _run(["--device", "cuda"])
    assert result.exit_code == 2 and "CUDA is not available" in result.output


def test_pause_type_passes_plans_through():
    plan = PausePlan.parse("2:0.5")
    assert pause_option  # decorator exists
    from adaseg.cli.options import PauseSpec

    assert PauseSpec().convert(plan, None, None) is plan


def test_train_parent_epochs_sets_the_iterations(tmp_path):
    """--epochs E trains ceil(E x images / batch) iterations (8 training images: 0.5 epoch at
    batch 2 is 2 iterations); with --iters it is a usage error, 0 is refused; nothing written."""
    from recipe_testing import invoke, invoke_json, write_folder

    folder = write_folder(tmp_path / "synth")
    out = invoke_json("train-parent", "--data", folder, "--epochs", "0.5", "--batch-size", "2", "--init", "none",
                      "--threads", "1", "--run", tmp_path / "run")
    assert out["iterations"] == 2
    both = invoke("train-parent", "--data", folder, "--epochs", "1", "--iters", "3", "--run", tmp_path / "x")
    assert both.exit_code == 2 and "--iters or --epochs" in both.output
    zero = invoke("train-parent", "--data", folder, "--epochs", "0", "--run", tmp_path / "x")
    assert zero.exit_code == 2 and "--epochs" in zero.output
    assert not (tmp_path / "x").exists()
