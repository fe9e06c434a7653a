"""Test-wide settings and fixtures.

Triton kernels run on CPU tensors under the interpreter; the variable must be set before
triton is first imported, hence here at conftest import time. Shared test helpers live in
tests/helpers/ (importable by name: recipe_testing, m2f_testing, panoptic_cases, parts_cases, det_testing,
detr_import_testing).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers"))

# Factories for run-directory tests: small derived datasets and run directories with a parent.


import pytest
import torch

from adaseg.storage.checkpoint import save_checkpoint
from adaseg.runs.derived import DerivedDataset
from adaseg.runs.run_dir import RunDir


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a small but real training (minutes at one thread); CI runs it, "
                                       "`-m 'not slow'` leaves it out")


def _derived(*, n=120, c=8, exits=(2, 3, 4, 5, 6), depth=6, fingerprint="0" * 64, seed=0, nan_rows=0):
    """A learnable derived dataset: each image's best exit is a linear function of its features
    (argmax of a fixed random projection), quality 0.6 there and 0.5 elsewhere."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g) * 3.0 + 1.0
    proj = torch.randn(len(exits), c, generator=g)
    best = (x @ proj.T).argmax(1)
    q = torch.full((n, len(exits)), 0.5, dtype=torch.float64)
    q[torch.arange(n), best] = 0.6
    q[:nan_rows] = float("nan")
    return DerivedDataset(
        exits=list(exits), quality=q, features=x, metric="pq", depth=depth,
        parent_fingerprint=fingerprint, image_ids=[f"img{i}" for i in range(n)],
    )


@pytest.fixture
def make_derived():
    return _derived


@pytest.fixture
def make_run(tmp_path):
    """``make_run(with_derived=True, **derived_kwargs) -> RunDir`` with a tiny parent checkpoint
    (and a derived dataset from that parent)."""

    def make(with_derived: bool = True, name: str = "run", **kwargs) -> RunDir:
        run = RunDir(tmp_path / name)
        meta = save_checkpoint(run.parent_path, {"w": torch.arange(6.0)}, kind="parent", config={"depth": 6})
        if with_derived:
            kwargs.setdefault("fingerprint", meta.fingerprint)
            _derived(**kwargs).save(run.derived_path)
        return run

    return make


# One trained run per test module, copied fresh for each test (tests/helpers/recipe_testing.py);
# a module that needs another run overrides base_run (e.g. a gate fitted with --K 4).
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small synthetic dataset folder (written once per module)."""
    from recipe_testing import write_folder

    return write_folder(tmp_path_factory.mktemp("data") / "synth")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, folder):
    """A finished TRAIN_FAST parent with its derived dataset and a gate (once per module)."""
    from recipe_testing import trained_run

    return trained_run(tmp_path_factory.mktemp("runs") / "run", folder)


@pytest.fixture
def run(base_run, tmp_path):
    """A copy of ``base_run`` the test may change."""
    from recipe_testing import copy_run

    return copy_run(base_run, tmp_path / "run")
