"""Mask2Former's encoder kinds (deform / lite / rt): what each layer updates, what it costs, and
that a checkpoint of one kind never loads into another.

Oracles: the token maps recorded after every layer (which tokens changed, compared with the
schedule written down from Lite-DETR's and RT-DETR's papers: level sizes from the input size
by hand), FLOPs of one layer counted by hand from the layer's matmuls and convolutions (2 x
multiply-adds, as adaseg.eval.flops counts), and the key names of the other kind's state dict.
The contract (mixed exits, recorded exits, pausing) is tests/models/test_adaptive_contract.py's.
"""

from __future__ import annotations

import pytest
import torch

import adaseg
from adaseg.eval.flops import count_flops
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.storage.checkpoint import CheckpointError, load_into, save_checkpoint

SIZE = 64  # resnet_tiny at 64 px: levels s1 2x2 (stride 32), s2 4x4 (16), s3 8x8 (8)
LEVEL_TOKENS = (4, 16, 64)
C, HEADS, POINTS, FFN, LEVELS = 64, 4, 4, 256, 3  # the tiny configurations' encoder


def _model(name: str, *, keep_last_layer: bool = True):
    torch.manual_seed(0)
    model = adaseg.create_model(name).eval()
    if not keep_last_layer:  # Lite: look at one layer at a time (no all-scale layer after an exit)
        model.pixel_decoder.transformer.keep_last_layer = False
    return model


def _images(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


def _level_rows(levels) -> torch.Tensor:
    """(N,) bool: the token-map rows of ``levels`` (lowest resolution first)."""
    rows = [torch.full((n,), lvl in levels) for lvl, n in enumerate(LEVEL_TOKENS)]
    return torch.cat(rows)


@torch.no_grad()
def _maps_after_each_layer(model, images, pause=None):
    """[input map, map after layer 1, ..., after layer K] (each (B, N, C)) and the pause records."""
    prep = model.prepare(images, None)
    settings = AdaptiveSettings(record_exits=tuple(range(1, model.depth + 1)), pause=pause)
    result = model.encode(prep, settings=settings, exit_plan=None, keep_aux=False)
    return [prep.pixel.src] + [result.per_exit[k] for k in range(1, model.depth + 1)], result.paused


# Lite-DETR "(5+1)x1", high = strides 32 and 16 (levels 0, 1), low = stride 8 (level 2)
LITE_SCHEDULE = {1: (0, 1), 2: (0, 1), 3: (0, 1), 4: (0, 1), 5: (0, 1), 6: (0, 1, 2)}
# RT-DETR: AIFI on stride 32; top-down lateral+fuse (32->16, 16->8); bottom-up (8->16, 16->32)
RT_SCHEDULE = {1: (0,), 2: (0, 1), 3: (1, 2), 4: (1,), 5: (0,)}


@pytest.mark.parametrize("name, schedule", [("m2f_lite_tiny", LITE_SCHEDULE), ("m2f_rt_tiny", RT_SCHEDULE),
                                            ("m2f_tiny", {k: (0, 1, 2) for k in range(1, 7)})])
def test_each_layer_updates_exactly_its_scales(name, schedule):
    model = _model(name, keep_last_layer=False)
    maps, _ = _maps_after_each_layer(model, _images())
    assert maps[0].shape[1] == sum(LEVEL_TOKENS) and model.depth == len(schedule)
    for layer, levels in schedule.items():
        changed = (maps[layer] != maps[layer - 1]).any(-1)  # (B, N) tokens this layer rewrote
        want = _level_rows(levels)
        for i in range(changed.shape[0]):
            assert torch.equal(changed[i], want), (name, layer, i)
        if name != "m2f_tiny":  # the encoder's own account agrees
            assert model.pixel_decoder.transformer.updated_levels(layer) == levels


def test_lite_pausing_updates_only_active_high_level_tokens():
    model = _model("m2f_lite_tiny", keep_last_layer=False)
    maps, paused = _maps_after_each_layer(model, _images(), pause="2:0.5")
    (record,) = paused
    for i in range(maps[0].shape[0]):
        active = torch.ones(sum(LEVEL_TOKENS), dtype=torch.bool)
        active[record.positions[i]] = False
        # pausing counts on all active tokens: some of each kind pause at this seed
        assert (~active & _level_rows((0, 1))).any() and (~active & _level_rows((2,))).any()
        for layer in range(3, 7):
            changed = (maps[layer][i] != maps[layer - 1][i]).any(-1)
            levels = (0, 1, 2) if layer == 6 else (0, 1)
            assert torch.equal(changed, active & _level_rows(levels)), layer


@pytest.mark.parametrize("pause", [None, "1:0.5"])
@torch.no_grad()
def test_lite_exits_run_the_kept_all_scale_layer_next(pause):
    """Lite-ECO-M2F: an exit after high-level layer k < 6 hands the decoder the map that
    layer 6 (all scales) makes of layer k's map; oracle: the map after layer k from a run
    without the kept layer, put through ``all_layer`` by hand on the tokens still active
    (paused ones keep their features)."""
    images = _images()
    plain = _model("m2f_lite_tiny", keep_last_layer=False)
    maps, paused = _maps_after_each_layer(plain, images, pause=pause)
    model = _model("m2f_lite_tiny")
    assert model.exits == (2, 3, 4, 5)
    enc = model.pixel_decoder.transformer
    prep = model.prepare(images, None)
    px = prep.pixel
    n = sum(LEVEL_TOKENS)
    active = torch.ones(images.shape[0], n, dtype=torch.bool)
    for record in paused:
        active[torch.arange(images.shape[0])[:, None], record.positions] = False
    for k in (2, 3, 5):
        got = model.encode(prep, settings=AdaptiveSettings(exits=k, pause=pause), exit_plan=torch.full((2,), k),
                           keep_aux=False).tokens
        for i in range(images.shape[0]):
            rows = active[i].nonzero().squeeze(1)
            want = maps[k][i].clone()
            want[rows] = enc.all_layer(maps[k][i : i + 1, rows], px.pos[i : i + 1, rows], px.reference_points[i : i + 1, rows],
                                       maps[k][i : i + 1], px.spatial_shapes, px.level_start_index, None)[0]
            torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-5)
    # exit 5 (+ the kept layer) is the full model: the same computation as running all 6 layers
    five = model.encode(prep, settings=AdaptiveSettings(exits=5), exit_plan=torch.full((2,), 5), keep_aux=False)
    six = model.encode(prep, settings=AdaptiveSettings(exits=6), exit_plan=torch.full((2,), 6), keep_aux=False)
    torch.testing.assert_close(five.tokens, six.tokens, rtol=0, atol=0)


# ---------------------------------------------------------------- FLOPs of one layer, by hand

def _deform_layer_flops(n_queries: int, n_values: int) -> int:
    """One deformable encoder layer (Mask2Former's) with n_queries queries over n_values values."""
    mlp = HEADS * LEVELS * POINTS
    macs = (n_values * C * C  # value_proj over every value token
            + n_queries * C * (2 * mlp)  # sampling_offsets
            + n_queries * C * mlp  # attention_weights
            + n_queries * HEADS * LEVELS * POINTS * (C // HEADS) * (4 + 1)  # bilinear corners + weighting
            + n_queries * C * C  # output_proj
            + 2 * n_queries * C * FFN)  # linear1, linear2
    return 2 * macs


def _aifi_flops(n: int) -> int:
    """RT-DETR's AIFI layer on n tokens: q/k/v/out projections, QK^T and AV, GELU FFN."""
    return 2 * (4 * n * C * C + 2 * n * n * C + 2 * n * C * FFN)


def _csp_flops(n: int) -> int:
    """One CSP block (2C -> C, expansion 1, 3 RepVGG blocks) on an n-pixel map."""
    return 2 * (2 * n * 2 * C * C + 3 * (n * C * C * 9 + n * C * C))


def _encoder_flops(model, exit_layer: int) -> int:
    images = _images(1)
    return count_flops(model, images, None, AdaptiveSettings(exits=exit_layer),
                       scopes={"encoder": model.encoder_modules()}).scopes["encoder"]


def test_flops_of_one_layer_of_each_kind_match_hand_counts():
    n = sum(LEVEL_TOKENS)
    n_high = LEVEL_TOKENS[0] + LEVEL_TOKENS[1]
    deform = _model("m2f_tiny")
    assert _encoder_flops(deform, 1) == _deform_layer_flops(n, n)
    lite = _model("m2f_lite_tiny")
    lite_2, lite_5, lite_6 = (_encoder_flops(lite, k) for k in (2, 5, 6))
    high, every = _deform_layer_flops(n_high, n), _deform_layer_flops(n, n)  # high-level queries / all tokens
    assert lite_2 == 2 * high + every  # exit 2: two high-level layers, then the kept layer 6
    assert lite_5 == 5 * high + every == lite_6  # exit 5 + the kept layer is the full model
    rt = _model("m2f_rt_tiny")
    n0, n1, n2 = LEVEL_TOKENS
    per_exit = [0] + [_encoder_flops(rt, k) for k in range(1, 6)]
    layers = [b - a for a, b in zip(per_exit, per_exit[1:])]
    assert layers == [
        _aifi_flops(n0),
        2 * n0 * C * C + _csp_flops(n1),  # lateral 1x1 on stride 32, fuse into stride 16
        2 * n1 * C * C + _csp_flops(n2),  # lateral 1x1 on stride 16, fuse into stride 8
        2 * n1 * C * C * 9 + _csp_flops(n1),  # 3x3 stride-2 conv 8 -> 16, fuse
        2 * n0 * C * C * 9 + _csp_flops(n0),  # 3x3 stride-2 conv 16 -> 32, fuse
    ]


# ---------------------------------------------------------------- checkpoints across kinds

@pytest.mark.parametrize("source, target, in_source, in_target", [
    ("m2f_tiny", "m2f_lite_tiny", "pixel_decoder.transformer.encoder.layers.0.",
     "pixel_decoder.transformer.high_layers.0."),
    ("m2f_lite_tiny", "m2f_rt_tiny", "pixel_decoder.transformer.high_layers.0.", "pixel_decoder.transformer.aifi."),
    ("m2f_rt_tiny", "m2f_tiny", "pixel_decoder.transformer.aifi.", "pixel_decoder.transformer.level_embed"),
])
def test_checkpoint_of_another_encoder_kind_is_refused_naming_keys(tmp_path, source, target, in_source, in_target):
    path = tmp_path / f"{source}.safetensors"
    source_state = _model(source).state_dict()
    save_checkpoint(path, source_state, kind="parent", config={"model": source, "options": {}})
    model = _model(target)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_into(model, path)
    message = str(err.value)
    assert "\n" not in message and "does not fit this model" in message
    missing = message.split("missing from checkpoint: ")[1].split(";")[0]
    unexpected = message.split("not in the model: ")[1]

    def listed(part):
        return [k for k in part.split(" (+")[0].split(", ")]

    # every key named is a real mismatch: the model's keys the file lacks, the file's the model lacks
    assert listed(missing) and all(k in before and k not in source_state for k in listed(missing))
    assert listed(unexpected) and all(k in source_state and k not in before for k in listed(unexpected))
    assert any(k.startswith(in_source) for k in source_state if k not in before)
    # the first missing keys are the model's first mismatched ones, in the model's order
    first_missing = [k for k in before if k not in source_state][: len(listed(missing))]
    assert listed(missing) == first_missing and first_missing[0].startswith(in_target)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nothing loaded


# ---------------------------------------------------------------- padding, and bad settings

@pytest.mark.parametrize("name", ["m2f_lite_tiny", "m2f_rt_tiny"])
@torch.no_grad()
def test_a_padded_image_gets_what_it_gets_alone(name):
    # oracle: each image run alone at its own size (sizes divisible by the coarsest stride, 32);
    # float64, so that float32's size-dependent summation orders (~1e-4 here) do not hide a leak;
    # 1e-6 because the shared pixel decoder computes the deformable reference points in float32
    model = _model(name).double()
    sizes = [(64, 96), (96, 64), (32, 32)]
    batch = torch.zeros(3, 3, 96, 96, dtype=torch.float64)
    mask = torch.ones(3, 96, 96, dtype=torch.bool)
    singles = []
    gen = torch.Generator().manual_seed(5)
    for i, (h, w) in enumerate(sizes):
        singles.append(torch.randn(3, h, w, generator=gen, dtype=torch.float64))
        batch[i, :, :h, :w] = singles[i]
        mask[i, :h, :w] = False
    exits = torch.tensor([model.depth, 3, model.exits[0]])
    out = model(batch, mask, AdaptiveSettings(exits=exits))
    for i, (h, w) in enumerate(sizes):
        alone = model(singles[i][None], None, AdaptiveSettings(exits=int(exits[i])))
        torch.testing.assert_close(out.heads["pred_logits"][i], alone.heads["pred_logits"][0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(out.heads["pred_masks"][i, :, : h // 4, : w // 4], alone.heads["pred_masks"][0],
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("options, message", [
    ({"encoder": "conv"}, "unknown encoder kind 'conv'; choose one of deform, lite, rt"),
    ({"encoder": "rt", "enc_layers": 5, "enc_points": 4}, "enc_points=4 is a deformable-attention setting"),
    ({"encoder": "rt", "enc_layers": 6}, r"the rt encoder over 3 levels has 2\*3-1 = 5 layers"),
    ({"encoder": "lite", "enc_layers": 1, "exits": (1,)}, "a Lite encoder needs at least 2 layers"),
])
def test_bad_encoder_settings_are_refused_naming_them(options, message):
    from adaseg.models.backbones import build_backbone
    from adaseg.models.mask2former.model import Mask2Former

    with pytest.raises(ValueError, match=message):
        Mask2Former(backbone=build_backbone("resnet_tiny"), num_classes=3, thing_ids=(0,), hidden_dim=64, mask_dim=64,
                    enc_heads=4, dec_layers=1, num_queries=4, **options)


def test_wsd_trains_the_rt_models_natural_exits_by_default():
    # train-parent without --exits weighs the model's potential exits (rt: 3 and 5, alpha = k/K);
    # one wsd loss on those exits runs (the criterion checks a weight per recorded exit)
    from adaseg.engine.train_parent import TrainSettings, resolve

    model = _model("m2f_rt_tiny").train()
    res = resolve(TrainSettings(model="m2f_rt_tiny", recipe="wsd"), model.depth, tuple(model.exits))
    assert res.exits == (3, 5) and res.alphas == {3: 3 / 5, 5: 1.0}
    assert resolve(TrainSettings(recipe="wsd", exits=(4, 5)), 5, (3, 5)).exits == (4, 5)
    mask = torch.zeros(1, SIZE, SIZE, dtype=torch.bool)
    mask[0, :16, :16] = True
    targets = [{"labels": torch.tensor([0]), "masks": mask.clone()} for _ in range(2)]
    out = model(_images(), None, AdaptiveSettings(record_exits=res.exits))
    parts = model.build_criterion()(out, targets, exit_weights=res.alphas)
    assert set(parts) >= {"loss", "loss_exit3", "loss_exit5"} and torch.isfinite(parts["loss"])
