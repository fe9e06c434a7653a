"""HF transformers Mask2Former -> adaseg: same weights, same outputs.

The oracle is transformers' own ``Mask2FormerForUniversalSegmentation`` (a test-only
dependency): a small Swin config, randomly initialised, every parameter perturbed with noise
(HF's init zeroes e.g. the deformable-attention offsets and weights, which would make parts
of the comparison trivial), saved with ``save_pretrained``, imported with
``from_hf_mask2former`` and run on the same input in eval mode.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install -e .[test])")

from adaseg.cli.main import main  # noqa: E402
from adaseg.models import from_hf_mask2former  # noqa: E402
from adaseg.models.adaptive.settings import AdaptiveSettings  # noqa: E402
from adaseg.models.hf.importer import HFConfigError, HFWeightsError, build_mask2former  # noqa: E402
from adaseg.runs.parent import build_model, load_model_weights, read_model_config  # noqa: E402

ATOL = 1e-4
NUM_LABELS = 5
THINGS = (0, 1, 2)


def _hf_config():
    swin = transformers.SwinConfig(
        embed_dim=32, depths=[1, 1, 2, 2], num_heads=[1, 2, 4, 8], window_size=7,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return transformers.Mask2FormerConfig(
        backbone_config=swin, feature_size=64, mask_feature_size=64, hidden_dim=64, encoder_feedforward_dim=128,
        dim_feedforward=128, encoder_layers=3, decoder_layers=4, num_queries=12, num_attention_heads=4,
        id2label={i: f"class{i}" for i in range(NUM_LABELS)},
    )


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """(directory, HF model in eval mode) with perturbed random weights."""
    torch.manual_seed(0)
    model = transformers.Mask2FormerForUniversalSegmentation(_hf_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    directory = tmp_path_factory.mktemp("hf_m2f")
    model.save_pretrained(directory)
    return directory, model


@pytest.fixture(scope="module")
def ours(hf):
    return from_hf_mask2former(hf[0], thing_ids=THINGS)


def _copy_dir(src, dst):
    shutil.copytree(src, dst)
    return dst


def _run_hf(model, x):
    with torch.no_grad():
        return model(pixel_values=x, output_hidden_states=True, output_auxiliary_logits=True)


def _threshold_margin(ref) -> float:
    """Smallest |mask logit| that feeds a masked-attention mask (sigmoid < 0.5 blocks a pixel).

    Masked attention is discontinuous there: a logit within float error of 0 may flip one
    attention-mask pixel between two correct implementations and move later outputs by far
    more than 1e-4. Parity is only defined away from the threshold.
    """
    sizes = [f.shape[-2:] for f in ref.pixel_decoder_hidden_states]
    preds = [a["masks_queries_logits"] for a in ref.auxiliary_logits]  # each feeds the next layer
    return min(float(torch.nn.functional.interpolate(m, size=sizes[i % 3], mode="bilinear", align_corners=False).abs().min())
               for i, m in enumerate(preds))


def _well_conditioned_input(model, batch, size, *, margin=1e-3):
    """(x, HF output) for the first seed whose attention-mask logits all keep ``margin`` from the threshold."""
    for seed in range(10):
        x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))
        ref = _run_hf(model, x)
        if _threshold_margin(ref) > margin:
            return x, ref
    raise AssertionError(f"no input of size {size} keeps its mask logits {margin} away from the threshold")


@pytest.mark.parametrize("batch,size", [(2, (128, 128)), (1, (100, 76)), (1, (224, 160))])
def test_class_and_mask_logits_match_hf(hf, ours, batch, size):
    x, ref = _well_conditioned_input(hf[1], batch, size)
    with torch.no_grad():
        out = ours(x).heads
    # guard against a trivially equal comparison (constant or zero outputs)
    assert ref.class_queries_logits.std() > 0.1 and ref.masks_queries_logits.std() > 0.1
    assert out["pred_masks"].shape == ref.masks_queries_logits.shape
    torch.testing.assert_close(out["pred_logits"], ref.class_queries_logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(out["pred_masks"], ref.masks_queries_logits, atol=ATOL, rtol=0)
    # deep supervision: the prediction from the raw queries and after every layer but the last
    assert len(out["aux_outputs"]) == len(ref.auxiliary_logits) == 3
    for mine, theirs in zip(out["aux_outputs"], ref.auxiliary_logits):
        torch.testing.assert_close(mine["pred_logits"], theirs["class_queries_logits"], atol=ATOL, rtol=0)
        torch.testing.assert_close(mine["pred_masks"], theirs["masks_queries_logits"], atol=ATOL, rtol=0)


def test_backbone_and_pixel_decoder_match_hf(hf, ours):
    x = torch.randn(1, 3, 96, 128)
    ref = _run_hf(hf[1], x)
    with torch.no_grad():
        feats = ours.backbone(x)
        for key, theirs in zip(("s4", "s3", "s2", "s1"), ref.encoder_hidden_states):
            torch.testing.assert_close(feats[key], theirs, atol=ATOL, rtol=0)
        pd = ours.pixel_decoder
        prep = pd.prepare(feats, None)
        enc = pd.encode(prep, settings=AdaptiveSettings(), exit_plan=torch.tensor([ours.depth]), keep_aux=False)
        mask_features, maps = pd.finish(enc.tokens, prep, feats["s4"], None)
    for mine, theirs in zip(maps, ref.pixel_decoder_hidden_states):
        torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0)
    torch.testing.assert_close(mask_features, ref.pixel_decoder_last_hidden_state, atol=ATOL, rtol=0)


def test_comparison_detects_a_changed_weight_and_timm_style_shifting(hf, ours):
    """The parity check can fail: one perturbed weight, or timm's no-shift rule on small maps
    (HF's SwinBackbone and the original Mask2Former always shift), breaks it."""
    x = torch.randn(1, 3, 128, 128)  # stage 4 is 4x4, smaller than the 7x7 window
    ref = _run_hf(hf[1], x)
    broken = from_hf_mask2former(hf[0], thing_ids=THINGS)
    with torch.no_grad():
        broken.backbone.layers[2].blocks[1].attn.qkv.weight[0] += 0.5
        assert (broken(x).heads["pred_logits"] - ref.class_queries_logits).abs().max() > 1e-3
    _, info = from_hf_mask2former(hf[0], thing_ids=THINGS, return_info=True)
    config = json.loads(json.dumps(info.config))
    config["backbone"]["settings"]["always_shift"] = False
    timm_style = build_mask2former(config).eval()
    timm_style.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert (timm_style(x).heads["pred_masks"] - ref.masks_queries_logits).abs().max() > 1e-3


def test_import_info_and_config(hf):
    model, info = from_hf_mask2former(hf[0], thing_ids=THINGS, return_info=True)
    assert info.class_names == [f"class{i}" for i in range(NUM_LABELS)]
    assert info.thing_ids == list(THINGS) and model.thing_ids == THINGS
    assert info.dropped[0] == "criterion.empty_weight"
    assert info.initialised == sorted(k for k in model.state_dict() if ".aux_decoders." in k)
    m = info.config["model"]
    assert (m["num_classes"], m["num_queries"], m["enc_layers"], m["dec_layers"]) == (NUM_LABELS, 12, 3, 3)
    assert not model.training


def test_bin_sharded_and_transformers5_names_load_the_same(hf, ours, tmp_path):
    sd = load_file(str(hf[0] / "model.safetensors"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(hf[0] / "config.json", bin_dir)
    torch.save(sd, bin_dir / "pytorch_model.bin")
    # transformers 5's in-memory names for the Swin backbone
    renames = [("attention.self.query.", "attention.q_proj."), ("attention.self.key.", "attention.k_proj."),
               ("attention.self.value.", "attention.v_proj."), ("attention.output.dense.", "attention.o_proj."),
               ("intermediate.dense.", "mlp.fc1."), ("output.dense.", "mlp.fc2."),
               ("pixel_level_module.encoder.encoder.", "pixel_level_module.encoder.swin.encoder."),
               ("pixel_level_module.encoder.embeddings.", "pixel_level_module.encoder.swin.embeddings.")]
    v5 = {}
    for k, v in sd.items():
        if k.startswith("model.pixel_level_module.encoder."):
            for a, b in renames:
                k = k.replace(a, b)
        v5[k] = v
    assert set(v5) != set(sd)
    v5_dir = tmp_path / "v5"
    v5_dir.mkdir()
    shutil.copy(hf[0] / "config.json", v5_dir)
    save_file(v5, str(v5_dir / "model.safetensors"))
    # a sharded checkpoint: two safetensors files and the index that names them
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(hf[0] / "config.json", sharded)
    keys = sorted(sd)
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2], "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, part in halves.items():
        save_file({k: sd[k] for k in part}, str(sharded / name))
    index = {"metadata": {}, "weight_map": {k: name for name, part in halves.items() for k in part}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    want = ours.state_dict()
    for directory in (bin_dir, v5_dir, sharded):
        got = from_hf_mask2former(directory, thing_ids=THINGS).state_dict()
        assert got.keys() == want.keys()
        for k in want:
            if ".aux_decoders." not in k:
                assert torch.equal(got[k], want[k]), k


def _with_index_buffers(directory, *, corrupt: bool):
    """Add the ``relative_position_index`` buffers that transformers 4 checkpoints store."""
    from adaseg.models.backbones.swin import relative_position_index

    sd = load_file(str(directory / "model.safetensors"))
    tables = [k for k in sd if k.endswith("attention.self.relative_position_bias_table")]
    for k in tables:
        index = relative_position_index(7).clone()
        if corrupt:
            index[0, 0] += 1
        sd[k.replace("relative_position_bias_table", "relative_position_index")] = index
    save_file(sd, str(directory / "model.safetensors"))
    return len(tables)


@pytest.mark.parametrize("corrupt", [False, True])
def test_stored_relative_position_index_is_checked_then_dropped(hf, ours, tmp_path, corrupt):
    directory = _copy_dir(hf[0], tmp_path / "v4")
    n = _with_index_buffers(directory, corrupt=corrupt)
    if corrupt:
        with pytest.raises(HFWeightsError, match="relative_position_index does not match a window of 7"):
            from_hf_mask2former(directory, thing_ids=THINGS)
        return
    model, info = from_hf_mask2former(directory, thing_ids=THINGS, return_info=True)
    assert sum(k.endswith("relative_position_index") for k in info.dropped) == n == 6
    assert torch.equal(model.backbone.norm.weight, ours.backbone.norm.weight)


def test_coco_labels_give_coco_things(hf, tmp_path):
    directory = _copy_dir(hf[0], tmp_path / "coco")
    cfg = json.loads((directory / "config.json").read_text())
    names = ["person"] + [f"thing{i}" for i in range(1, 79)] + ["toothbrush"] + [f"stuff{i}" for i in range(53)]
    cfg["id2label"] = {str(i): n for i, n in enumerate(names)}
    (directory / "config.json").write_text(json.dumps(cfg))
    # the class head has 6 outputs, the config now asks for 134: a shape mismatch, named
    with pytest.raises(HFWeightsError, match=r"class_predictor\.weight \(6, 64\) -> predictor\.class_embed\.weight \(134, 64\)"):
        from_hf_mask2former(directory)
    from adaseg.models.hf.config import default_thing_ids

    assert default_thing_ids(names) == tuple(range(80))


def _edit_config(key_path, value):
    def edit(directory):
        cfg = json.loads((directory / "config.json").read_text())
        node = cfg
        for k in key_path[:-1]:
            node = node[k]
        node[key_path[-1]] = value
        (directory / "config.json").write_text(json.dumps(cfg))
    return edit


def _edit_weights(change):
    def edit(directory):
        sd = load_file(str(directory / "model.safetensors"))
        change(sd)
        save_file(sd, str(directory / "model.safetensors"))
    return edit


def _write(name, text):
    def edit(directory):
        (directory / name).write_text(text)
    return edit


BAD_INPUTS = {
    "malformed config.json": (_write("config.json", "{not json"), "malformed JSON"),
    "config.json not an object": (_write("config.json", "[1, 2]"), "expected a JSON object"),
    "other architecture": (_edit_config(["model_type"], "maskformer"), "model_type is 'maskformer'"),
    "resnet backbone": (_edit_config(["backbone_config", "model_type"], "resnet"), "backbone model_type 'resnet'"),
    "pre-norm decoder": (_edit_config(["pre_norm"], True), "pre_norm true"),
    "feature/hidden widths differ": (_edit_config(["hidden_dim"], 128), "feature_size 64 != hidden_dim 128"),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), "no weights file"),
    "corrupt weights": (_write("model.safetensors", "garbage"), "not a readable safetensors file"),
    "corrupt torch weights": (lambda d: ((d / "model.safetensors").unlink(), (d / "pytorch_model.bin").write_text("garbage")),
                              "not a readable torch weights file"),
    "id2label with a gap": (_edit_config(["id2label"], {"0": "a", "2": "b"}), "id2label ids must be 0..1"),
    "shape mismatch": (_edit_config(["num_queries"], 20), r"queries_features\.weight \(12, 64\) -> predictor\.query_feat\.weight \(20, 64\)"),
    "unknown key": (_edit_weights(lambda sd: sd.__setitem__("model.extra.weight", torch.zeros(1))), "model.extra.weight"),
    "missing key": (_edit_weights(lambda sd: sd.pop("model.transformer_module.decoder.layernorm.bias")),
                    r"missing from the checkpoint: predictor\.decoder_norm\.bias"),
    "half a qkv": (_edit_weights(lambda sd: sd.pop("model.pixel_level_module.encoder.encoder.layers.0.blocks.0.attention.self.key.bias")),
                   "incomplete query/key/value"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_hf_input_fails_with_one_line_and_writes_nothing(hf, tmp_path, case):
    edit, message = BAD_INPUTS[case]
    directory = _copy_dir(hf[0], tmp_path / "ckpt")
    edit(directory)
    with pytest.raises((HFConfigError, HFWeightsError), match=message):
        from_hf_mask2former(directory, thing_ids=THINGS)
    out = tmp_path / "out.safetensors"
    result = CliRunner().invoke(main, ["import-weights", "--hf", str(directory), "--thing-ids", "0,1,2", "--out", str(out)])
    assert result.exit_code != 0
    error_lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(error_lines) == 1 and error_lines[0].startswith("Error: "), result.output
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_cli_missing_dir_and_unknown_labels(hf, tmp_path):
    out = tmp_path / "out.safetensors"
    runner = CliRunner()
    result = runner.invoke(main, ["import-weights", "--hf", str(tmp_path / "nope"), "--out", str(out)])
    assert result.exit_code != 0 and "no such checkpoint directory" in result.output
    result = runner.invoke(main, ["import-weights", "--hf", str(hf[0]), "--out", str(out)])
    assert result.exit_code != 0 and "cannot tell thing from stuff" in result.output
    result = runner.invoke(main, ["import-weights", "--hf", str(hf[0]), "--out", str(tmp_path / "x.pt")])
    assert result.exit_code == 2 and "must end in .safetensors" in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_hf_roundtrip(hf, ours, tmp_path):
    out = tmp_path / "m2f.safetensors"
    result = CliRunner().invoke(main, ["import-weights", "--hf", str(hf[0]), "--thing-ids", "0,1,2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists() and out.with_suffix(".json").exists()
    name, options, _ = read_model_config(out)  # how every step rebuilds an imported model
    model = build_model(name, options).eval()
    meta = load_model_weights(model, out, expect_model=name)
    assert meta.kind == "mask2former" and meta.extra["class_names"][0] == "class0"
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        a, b = model(x).heads, ours(x).heads
    assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_masks"], b["pred_masks"])


def _timm_file(tmp_path, name="swin_tiny_cpu"):
    from adaseg.models.backbones import build_backbone

    torch.manual_seed(3)
    source = build_backbone(name)
    sd = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
          for k, v in source.state_dict().items() if not k.startswith("out_norms.")}
    sd["head.fc.weight"] = torch.zeros(10, 256)  # a classifier head, dropped on import
    sd["head.fc.bias"] = torch.zeros(10)
    path = tmp_path / "timm.safetensors"
    save_file(sd, str(path))
    return path, sd


def test_cli_timm_backbone(tmp_path):
    path, sd = _timm_file(tmp_path)
    out = tmp_path / "bb.safetensors"
    result = CliRunner().invoke(main, ["import-weights", "--timm-backbone", str(path), "--model", "swin_tiny_cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    from adaseg.models.backbones import build_backbone
    from adaseg.storage.checkpoint import load_into, read_checkpoint_meta

    backbone = build_backbone(read_checkpoint_meta(out).config["name"])
    meta = load_into(backbone, out)
    assert meta.kind == "backbone" and meta.config == {"name": "swin_tiny_cpu"}
    assert meta.extra["dropped"] == ["head.fc.bias", "head.fc.weight"]
    got = backbone.state_dict()
    for k, v in sd.items():
        if not k.startswith("head."):
            assert torch.equal(got[k], v), k


@pytest.mark.parametrize("args,message", [
    (["--model", "swin_zz"], "unknown backbone 'swin_zz'"),
    (["--model", "swin_tiny_cpu", "--corrupt"], "timm.pth: not a"),
    (["--model", "resnet_tiny"], "checkpoint does not match ResNet"),
    ([], "needs --model NAME"),
])
def test_cli_timm_bad_input_writes_nothing(tmp_path, args, message):
    path, _ = _timm_file(tmp_path)
    if "--corrupt" in args:
        args = [a for a in args if a != "--corrupt"]
        path = tmp_path / "timm.pth"
        path.write_text("garbage")
    out = tmp_path / "bb.safetensors"
    result = CliRunner().invoke(main, ["import-weights", "--timm-backbone", str(path), *args, "--out", str(out)])
    assert result.exit_code != 0 and message in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0]  # usage errors add click's 2-line usage hint above it
    assert not out.exists() and not out.with_suffix(".json").exists()
