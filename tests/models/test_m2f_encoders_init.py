"""``train-parent --init CKPT --init-encoder KIND``: a Mask2Former of one encoder kind started
from a checkpoint of another (adaseg/engine/init_encoder.py, adaseg/models/mask2former/encoder_mapping.py).

Oracles: the expected key correspondence written out here from the two encoders' documented
names (Lite-DETR "(5+1)x1": deformable layer i -> ``high_layers.i`` for i < 5, layer 5 ->
``all_layer``; the layer's own parameter names taken from a freshly built
:class:`DeformableEncoderLayer`), compared tensor by tensor with the source checkpoint; for
``rt`` the model's own initialisation for every encoder key. Refusals: one line, the first
mismatched keys computed here from the two state dicts, and no file written.
"""

from __future__ import annotations

import json

import pytest
import torch
from recipe_testing import invoke, snapshot, write_folder

import adaseg
from adaseg.engine.init_encoder import load_across_encoders
from adaseg.models.mask2former.encoder import DeformableEncoderLayer
from adaseg.storage.checkpoint import save_checkpoint

ENC = "pixel_decoder.transformer."
DEPTH = 6  # m2f_tiny / m2f_lite_tiny encoder layers


def _model(name: str, seed: int):
    torch.manual_seed(seed)
    return adaseg.create_model(name)


def _save(path, name: str, state: dict) -> str:
    save_checkpoint(path, {k: v.contiguous() for k, v in state.items()}, kind="parent",
                    config={"model": name, "options": {}})
    return str(path)


def _layer_params() -> list[str]:
    """A deformable encoder layer's parameter names, from a layer built on its own."""
    layer = DeformableEncoderLayer(d_model=8, d_ffn=16, n_levels=3, n_heads=2, n_points=2, dropout=0.0)
    return list(layer.state_dict())


@pytest.fixture(scope="module")
def deform_ckpt(tmp_path_factory):
    model = _model("m2f_tiny", seed=0)
    state = model.state_dict()
    path = _save(tmp_path_factory.mktemp("ckpt") / "m2f_tiny.safetensors", "m2f_tiny", state)
    return path, {k: v.clone() for k, v in state.items()}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("data") / "synth")


def test_deform_layers_map_one_to_one_onto_lite(deform_ckpt):
    path, source = deform_ckpt
    expected = {}  # lite key -> deform key, written out from the schedule
    for p in _layer_params():
        for i in range(DEPTH - 1):
            expected[f"{ENC}high_layers.{i}.{p}"] = f"{ENC}encoder.layers.{i}.{p}"
        expected[f"{ENC}all_layer.{p}"] = f"{ENC}encoder.layers.{DEPTH - 1}.{p}"
    model = _model("m2f_lite_tiny", seed=1)
    mapping = load_across_encoders(model, path, "m2f_lite_tiny", "deform")
    assert mapping.mapped == expected
    state = model.state_dict()
    assert set(state) == set(expected) | {k for k in source if k in state}  # every model key accounted for
    for key, tensor in state.items():
        src_key = expected.get(key, key)  # not mapped: the same name (level_embed, aux_decoders, the rest)
        assert torch.equal(tensor, source[src_key]), key
    assert mapping.fresh == [] and mapping.dropped == []


def test_rt_takes_everything_but_its_encoder(deform_ckpt):
    path, source = deform_ckpt
    model = _model("m2f_rt_tiny", seed=1)
    own = {k: v.clone() for k, v in model.state_dict().items()}
    mapping = load_across_encoders(model, path, "m2f_rt_tiny", "deform")
    encoder_keys = [k for k in own if k.startswith(ENC)]
    assert encoder_keys and mapping.fresh == encoder_keys and mapping.mapped == {}
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, own[key] if key.startswith(ENC) else source[key]), key
    assert set(mapping.dropped) == {k for k in source if k.startswith(ENC)}


def test_without_the_flag_the_refusal_names_the_first_mismatched_keys(deform_ckpt, folder, tmp_path):
    path, source = deform_ckpt
    run = tmp_path / "run"
    result = invoke("train-parent", "--model", "m2f_lite_tiny", "--data", folder, "--init", path, "--iters", "1",
                    "--threads", "1", "--run", run)
    assert result.exit_code != 0 and "Traceback" not in result.output
    line = [x for x in result.output.splitlines() if x.strip()][-1]
    assert line.startswith("Error:") and "is a checkpoint for model 'm2f_tiny', not 'm2f_lite_tiny'" in line
    target = list(_model("m2f_lite_tiny", seed=1).state_dict())
    missing = line.split("missing from checkpoint: ")[1].split(" (+")[0].split(", ")
    extra = line.split("not in the model: ")[1].split(" (+")[0].split(", ")
    # the first keys of the model the file lacks, in the model's order; the named extra keys real ones
    assert missing == [k for k in target if k not in source][: len(missing)]
    assert missing[0] == f"{ENC}high_layers.0.self_attn.sampling_offsets.weight"
    assert extra and all(k in source and k not in target and k.startswith(f"{ENC}encoder.layers.") for k in extra)
    assert "--init-encoder deform" in line
    assert not run.exists()  # refused with the settings, before the run directory is made


def _tampered(deform_ckpt, tmp_path) -> str:
    """m2f_tiny's checkpoint with layer 2's FFN narrowed: same names, another architecture."""
    _, source = deform_ckpt
    state = dict(source)
    state[f"{ENC}encoder.layers.2.linear1.weight"] = source[f"{ENC}encoder.layers.2.linear1.weight"][:128].clone()
    return _save(tmp_path / "narrow.safetensors", "m2f_tiny", state)


@pytest.mark.parametrize("case, expect", [
    ("declared lite", "the checkpoint's encoder is 'deform' (its keys), not 'lite'"),
    ("same kind", "already the model's kind"),
    ("shape", f"{ENC}encoder.layers.2.linear1.weight (128, 64) in the checkpoint does not fit "
              f"{ENC}high_layers.2.linear1.weight (256, 64)"),
    ("init none", "--init none names none"),
    ("segmenter", "maps one Mask2Former encoder kind onto another"),
])
def test_a_wrong_pairing_is_refused_in_one_line_writing_nothing(deform_ckpt, folder, tmp_path, case, expect):
    path, _ = deform_ckpt
    model, kind = "m2f_lite_tiny", "deform"
    if case == "declared lite":
        kind = "lite"
    elif case == "same kind":
        model = "m2f_tiny"
    elif case == "shape":
        path = _tampered(deform_ckpt, tmp_path)
    elif case == "init none":
        path = "none"
    elif case == "segmenter":
        model = "segmenter_tiny"
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("x")
    before = snapshot(run)
    result = invoke("train-parent", "--model", model, "--data", folder, "--init", path, "--init-encoder", kind,
                    "--iters", "1", "--threads", "1", "--run", run)
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert lines[-1].startswith("Error:") and expect in lines[-1], result.output
    assert snapshot(run) == before and not (run / "config.json").exists()


def test_train_parent_with_init_encoder_records_the_mapping(deform_ckpt, folder, tmp_path):
    path, _ = deform_ckpt
    run = tmp_path / "run"
    result = invoke("train-parent", "--model", "m2f_lite_tiny", "--data", folder, "--init", path,
                    "--init-encoder", "deform", "--recipe", "standard", "--iters", "1", "--batch-size", "2",
                    "--threads", "1", "--run", run)
    assert result.exit_code == 0, result.output
    assert "encoder deform -> lite: 96 tensors mapped" in result.output  # 6 layers x 16 tensors
    config = json.loads((run / "config.json").read_text())
    assert config["init"] == path and config["train"]["init_encoder"] == "deform"
    record = config["init_encoder"]
    assert record["from"] == "deform" and record["to"] == "lite" and record["fresh"] == []
    assert record["mapped"][f"{ENC}all_layer.linear1.weight"] == f"{ENC}encoder.layers.5.linear1.weight"
    assert len(record["mapped"]) == DEPTH * len([p for p in _layer_params()])
    assert (run / "checkpoints" / "parent.safetensors").exists()
