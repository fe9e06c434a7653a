"""Checkpoints: round trip, fingerprints, and clear errors for the wrong architecture."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from adaseg.storage.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_into,
    read_checkpoint_meta,
    save_checkpoint,
    sidecar_path,
    tensor_fingerprint,
)


def _net(hidden=4):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def test_roundtrip_and_sidecar(tmp_path):
    net = _net()
    path = tmp_path / "ck" / "parent.safetensors"
    meta = save_checkpoint(path, net.state_dict(), kind="parent", config={"hidden": 4}, extra={"step": 7})
    fresh = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    loaded = load_into(fresh, path)
    for k, v in net.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)
    assert loaded == meta == read_checkpoint_meta(path) and meta.content_hash is not None
    assert loaded.config == {"hidden": 4} and loaded.extra == {"step": 7}
    side = json.loads(sidecar_path(path).read_text())
    assert side["fingerprint"] == meta.fingerprint and side["kind"] == "parent"


def test_fingerprint_depends_on_weights_only(tmp_path):
    a = {"w": torch.ones(3), "b": torch.zeros(2)}
    m1 = save_checkpoint(tmp_path / "a.safetensors", a, kind="x", config={"c": 1})
    m2 = save_checkpoint(tmp_path / "b.safetensors", dict(reversed(list(a.items()))), kind="y", config={"c": 2})
    assert m1.fingerprint == m2.fingerprint
    changed = {"w": torch.ones(3), "b": torch.tensor([0.0, 1e-7])}
    assert tensor_fingerprint(changed) != m1.fingerprint
    # dtype is part of the identity even when the values are equal
    assert tensor_fingerprint({"w": torch.ones(3, dtype=torch.float64), "b": torch.zeros(2)}) != m1.fingerprint


def test_verify_detects_modified_tensors(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = tmp_path / "p.safetensors"
    save_checkpoint(path, {"w": torch.ones(3)}, kind="parent", config={})
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    save_file({"w": torch.full((3,), 2.0)}, str(path), metadata=metadata)  # tampered outside adaseg
    read_checkpoint_meta(path)  # the header alone is not verified
    with pytest.raises(CheckpointError, match="is corrupt: its bytes do not match its content hash"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "other, expected",
    [
        (lambda: nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)), "0.weight (4, 3) vs (5, 3)"),
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Linear(2, 2)), "missing from checkpoint: 3.weight, 3.bias"),
        (lambda: nn.Sequential(nn.Linear(3, 4)), "not in the model: 2.bias, 2.weight"),
    ],
    ids=["shape", "missing", "unexpected"],
)
def test_wrong_architecture_names_first_mismatches(tmp_path, other, expected):
    path = tmp_path / "p.safetensors"
    save_checkpoint(path, _net().state_dict(), kind="parent", config={})
    target = other()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_into(target, path)
    message = str(err.value)
    assert expected in message and str(path) in message and "\n" not in message
    for k, v in target.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k])


def test_many_mismatches_are_truncated(tmp_path):
    path = tmp_path / "p.safetensors"
    save_checkpoint(path, {f"k{i}": torch.zeros(1) for i in range(9)}, kind="x", config={})
    with pytest.raises(CheckpointError, match=r"\(\+4 more\)"):
        load_into(nn.Linear(1, 1), path)


def test_bad_config_writes_nothing(tmp_path):
    path = tmp_path / "p.safetensors"
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(path, {"w": torch.ones(1)}, kind="x", config={"f": object()})
    assert list(tmp_path.iterdir()) == []


def test_tied_weights_are_saved(tmp_path):
    w = torch.randn(4, 4)
    path = tmp_path / "tied.safetensors"
    save_checkpoint(path, {"a": w, "b": w}, kind="x", config={})
    tensors, _ = load_checkpoint(path)
    assert torch.equal(tensors["a"], w) and torch.equal(tensors["b"], w)


@pytest.mark.parametrize("content", [None, b"not a safetensors file", "foreign"])
def test_unreadable_or_foreign_files(tmp_path, content):
    path = tmp_path / "x.safetensors"
    if content == "foreign":
        from safetensors.torch import save_file

        save_file({"w": torch.ones(1)}, str(path))
        match = "no 'adaseg' metadata"
    elif content is not None:
        path.write_bytes(content)
        match = "not a readable safetensors"
    else:
        match = "does not exist"
    with pytest.raises(CheckpointError, match=match):
        read_checkpoint_meta(path)


def test_path_must_be_safetensors(tmp_path):
    with pytest.raises(CheckpointError, match=".safetensors"):
        save_checkpoint(tmp_path / "x.pt", {"w": torch.ones(1)}, kind="x", config={})
