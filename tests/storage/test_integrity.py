"""Content hashes (adaseg.storage.integrity): computed when written, verified when read; one
flipped bit anywhere in a file is caught; NaN/inf refused; files that predate hashes."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from adaseg.storage.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
    sidecar_path,
    tensor_fingerprint,
)
from adaseg.runs.derived import DerivedDataset, DerivedDatasetError
from adaseg.storage.integrity import HASH_KEY, split_safetensors, write_safetensors
from adaseg.runs.parent import ASSETS


def data_offset(path) -> int:
    """Byte offset of the data section (8 + header length), read independently of adaseg."""
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def flip_bit(path, offset: int, bit: int = 3) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 1 << bit
    path.write_bytes(bytes(raw))


def test_hash_is_sha256_of_layout_description_and_data(tmp_path):
    """Oracle: recompute the documented definition from the file's bytes with hashlib/json only."""
    path = tmp_path / "c.safetensors"
    meta = save_checkpoint(path, {"w": torch.arange(6.0), "b": torch.ones(2, dtype=torch.float64)},
                           kind="parent", config={"a": 1}, extra={"e": [1, 2]})
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    described = json.loads(header.pop("__metadata__")["adaseg"])
    stored = described.pop(HASH_KEY)
    canon = lambda o: json.dumps(o, sort_keys=True, separators=(",", ":")).encode()  # noqa: E731
    expected = hashlib.sha256(b"adaseg-content-v1\n" + canon(header) + b"\n" + canon(described) + b"\n"
                              + raw[8 + n :]).hexdigest()
    assert stored == expected == meta.content_hash
    assert json.loads(sidecar_path(path).read_text())[HASH_KEY] == expected
    # the safetensors library reads the file as written (header padded to 8 bytes)
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(path))["w"], torch.arange(6.0)) and n % 8 == 0


@pytest.mark.parametrize("where", ["data-middle", "data-first", "data-last", "layout", "description"])
def test_one_flipped_bit_is_caught(tmp_path, where):
    path = tmp_path / "parent.safetensors"
    save_checkpoint(path, {"w": torch.linspace(-1, 1, 1000), "v": torch.arange(10)}, kind="parent",
                    config={"depth": 6}, extra={"note": "abcdef"})
    raw = path.read_bytes()
    start, size = data_offset(path), len(raw)
    header_text = raw[8:start].decode()
    offset = {
        "data-middle": start + (size - start) // 2,
        "data-first": start,
        "data-last": size - 1,
        # inside the layout: a digit of a shape (keeps the JSON valid: 1000 -> 1001 flips bit 0)
        "layout": 8 + header_text.index('"shape":[1000]') + len('"shape":[100'),
        "description": 8 + header_text.index("abcdef"),  # 'a' -> 'c': still valid JSON
    }[where]
    flip_bit(path, offset, bit=0 if where == "layout" else 1)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "corrupt" in message or "not a readable" in message


def test_nan_is_refused_when_written_and_when_read(tmp_path):
    path = tmp_path / "gate.safetensors"
    bad = {"linear.weight": torch.tensor([[1.0, float("nan")]]), "linear.bias": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="refusing to write.*NaN/inf in linear.weight"):
        save_checkpoint(path, bad, kind="gate", config={})
    assert not path.exists()
    # a file with a valid hash over NaN weights (written by other means) is refused at load
    meta = {"format": 1, "kind": "gate", "config": {}, "fingerprint": tensor_fingerprint(bad), "extra": {}}
    write_safetensors(path, bad, meta)
    with pytest.raises(CheckpointError, match=r"holds NaN/inf values in linear.weight"):
        load_checkpoint(path)


def test_legacy_checkpoint_without_hash_is_verified_by_fingerprint(tmp_path):
    from safetensors.torch import save_file

    tensors = {"w": torch.arange(4.0)}
    legacy = {"format": 1, "kind": "parent", "config": {}, "fingerprint": tensor_fingerprint(tensors), "extra": {}}
    path = tmp_path / "old.safetensors"
    save_file(tensors, str(path), metadata={"adaseg": json.dumps(legacy)})
    loaded, meta = load_checkpoint(path)
    assert torch.equal(loaded["w"], tensors["w"]) and meta.content_hash is None
    save_file({"w": torch.tensor([0.0, 1.0, 2.0, 3.5])}, str(path), metadata={"adaseg": json.dumps(legacy)})
    with pytest.raises(CheckpointError, match="do not match the recorded fingerprint"):
        load_checkpoint(path)


def test_shipped_base_carries_a_verified_hash_over_unchanged_tensors():
    path = ASSETS / "m2f_tiny_synthetic_base.safetensors"
    tensors, meta = load_checkpoint(path)
    assert meta.content_hash is not None
    # the tensors are those the fingerprint was recorded for when the asset was trained
    assert tensor_fingerprint(tensors) == meta.fingerprint == (
        "dfb419c306cadfd2df21c943663b846b1fc7703b8ca89bccf00b937411b27026")
    assert json.loads(sidecar_path(path).read_text())[HASH_KEY] == meta.content_hash


def test_derived_flip_nan_and_legacy(tmp_path, make_derived, capsys):
    path = tmp_path / "derived.safetensors"
    derived = make_derived(n=40, nan_rows=3)  # NaN quality (undefined) is legitimate
    derived.save(path)
    again = DerivedDataset.load(path)
    assert again.content_hash == derived.content_hash and torch.equal(again.features, derived.features)
    assert torch.isnan(again.quality[:3]).all()

    flip_bit(path, data_offset(path) + (path.stat().st_size - data_offset(path)) // 2)
    with pytest.raises(DerivedDatasetError, match=r"is corrupt.*run `adaseg derive --run"):
        DerivedDataset.load(path)

    # inf quality / NaN parts values: refused even with a valid hash
    tensors = {"exits": derived.exits, "quality": derived.quality.clone(), "features": derived.features}
    tensors["quality"][5, 0] = float("inf")
    raw_meta = {"format": 1, "metric": "pq", "part_names": ["tp", "fp", "fn", "iou_sum"], "depth": 6,
                "parent_fingerprint": "0" * 64, "image_ids": derived.image_ids, "info": {}}
    write_safetensors(path, tensors, raw_meta)
    with pytest.raises(DerivedDatasetError, match="inf"):
        DerivedDataset.load(path)

    # a file from before content hashes: read, with one note that it cannot be verified
    from safetensors.torch import save_file

    legacy = tmp_path / "old" / "derived.safetensors"
    legacy.parent.mkdir()
    save_file({"exits": derived.exits, "quality": derived.quality, "features": derived.features}, str(legacy),
              metadata={"adaseg": json.dumps(raw_meta)})
    assert DerivedDataset.load(legacy).content_hash is None
    DerivedDataset.load(legacy)
    err = capsys.readouterr().err
    assert err.count("predates content hashes") == 1 and str(legacy) in err


def test_checkpoint_reader_names_other_adaseg_files(tmp_path, make_derived):
    path = tmp_path / "derived.safetensors"
    make_derived(n=10).save(path)
    with pytest.raises(CheckpointError, match="is a derived dataset .*not a checkpoint"):
        read_checkpoint_meta(path)
    with pytest.raises(CheckpointError, match="is a directory"):
        read_checkpoint_meta(tmp_path)


def test_split_refuses_truncated_headers(tmp_path):
    from adaseg.storage.integrity import IntegrityError

    with pytest.raises(IntegrityError, match="header length"):
        split_safetensors((10**6).to_bytes(8, "little") + b"{}", path="x")
    with pytest.raises(IntegrityError, match="not a readable safetensors file"):
        split_safetensors(b"abc", path="x")


def test_shipped_detr_base_is_verified_and_what_init_auto_picks():
    """The shipped detr_tiny base (a standard-trained DETR, see README "ECO-DETR") carries a
    verified hash over its tensors, loads into detr_tiny, and `--init auto` picks it for the
    built-in set only."""
    from adaseg.engine.train_parent import TrainSettings, resolve_init
    from adaseg.models.registry import create_model
    from adaseg.runs.parent import load_model_weights

    path = ASSETS / "detr_tiny_synthetic_base.safetensors"
    tensors, meta = load_checkpoint(path)
    assert meta.content_hash is not None and tensor_fingerprint(tensors) == meta.fingerprint
    assert json.loads(sidecar_path(path).read_text())[HASH_KEY] == meta.content_hash
    assert meta.config["model"] == "detr_tiny"
    load_model_weights(create_model("detr_tiny"), path, expect_model="detr_tiny")
    assert resolve_init(TrainSettings(model="detr_tiny", data="synthetic")) == str(path)
    assert resolve_init(TrainSettings(model="detr_tiny", data="coco-det:/d")) is None
