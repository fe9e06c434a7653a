"""Fixtures of the predict tests: a tiny synthetic folder and a run with a parent and a gate
(the shared helpers of tests/helpers)."""

from __future__ import annotations

import pytest

from recipe_testing import TRAIN_FAST, invoke_json, write_folder  # noqa: E402


@pytest.fixture(scope="session")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("data") / "synth")


@pytest.fixture(scope="session")
def run(tmp_path_factory, folder):
    """A run with a parent (2 iterations of wsd+pause) and a beta=0 gate."""
    root = tmp_path_factory.mktemp("runs") / "run"
    invoke_json("train-parent", "--data", folder, *TRAIN_FAST, "--run", root)
    invoke_json("derive", "--run", root, "--threads", "1")
    invoke_json("fit-gate", "--beta", "0", "--run", root, "--epochs", "5")
    return root
