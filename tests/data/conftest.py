"""Shared fixtures: a tiny synthetic COCO-panoptic folder (generated once per session) and
an isolated cache directory so tests never touch ~/.cache/adaseg."""

from __future__ import annotations

import pytest

from adaseg.data.synthetic.generate import write_synthetic


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("synth") / "set"
    return write_synthetic(str(root), n_train=6, n_val=5, size=64, seed=3, workers=1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADASEG_CACHE", str(tmp_path / "cache"))
