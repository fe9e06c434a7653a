"""Mask2Former's adaptive encoder beyond the contract every model shares
(tests/models/test_adaptive_contract.py): paused tokens as deformable-attention values,
entropy selection, random pausing's generator, padding, the gate.

Oracles: a hand-written loop that updates every token and then restores the paused ones
(deformable attention is per query, so this is an independent statement of "paused tokens
are values but never updated"); an entropy computed here with softmax; an unpadded run of
each image.
"""

from __future__ import annotations

import pytest
import torch
from m2f_testing import tiny_model

from adaseg.models.adaptive.plan import PausePlan, normalise_exits
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.adaptive.gate import Gate

ATOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=0)


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.randn(4, 3, 64, 96)


def _close(a, b, atol=ATOL):
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


def _encoder_inputs(model, images):
    feats = model.backbone(images)
    prep = model.pixel_decoder.prepare(feats, None)
    return prep


def _entropy(tokens, linear):
    logp = torch.log_softmax(tokens @ linear.weight.t() + linear.bias, -1)
    return -(logp.exp() * logp).sum(-1)


@torch.no_grad()
def test_entropy_pauses_the_lowest_entropy_tokens(model, images):
    pd = model.pixel_decoder
    prep = _encoder_inputs(model, images)
    b, s, _ = prep.src.shape
    settings = AdaptiveSettings(record_exits=(2, 6), pause="2:0.4")
    res = pd.encode(prep, settings=settings, exit_plan=None, keep_aux=False)
    after2, final = res.per_exit[2], res.per_exit[6]
    (record,) = res.paused
    layer, rows, paused_idx = record.layer, record.rows, record.positions
    assert layer == 2 and rows.tolist() == list(range(b))
    n_pause = s - (s - int(0.4 * s))
    assert paused_idx.shape == (b, n_pause)
    # the paused tokens are exactly the lowest-entropy ones (entropy computed here)
    ent = _entropy(after2, pd.transformer.aux_decoders[1])
    expected = ent.argsort(dim=1, stable=True)[:, :n_pause].sort(1).values
    assert torch.equal(paused_idx, expected)
    for i in range(b):
        mask = torch.zeros(s, dtype=torch.bool)
        mask[paused_idx[i]] = True
        assert torch.equal(final[i, mask], after2[i, mask])  # in place, bit for bit
        assert (final[i, ~mask] - after2[i, ~mask]).abs().amax(-1).min() > 0  # active ones moved


@pytest.mark.parametrize("spec", ["1:0.5", "2:0.3,4:0.6", "5:0.9"])
@torch.no_grad()
def test_pausing_matches_update_all_then_restore_oracle(model, images, spec):
    """Oracle: update every token each layer (values = all tokens), then put back the
    paused tokens' old features; pause sets chosen by entropy computed here."""
    pd = model.pixel_decoder
    prep = _encoder_inputs(model, images)
    b, s, _ = prep.src.shape
    plan = PausePlan.parse(spec)
    res = pd.encode(prep, settings=AdaptiveSettings(pause=plan), exit_plan=normalise_exits(None, b, 6),
                    keep_aux=False)
    x = prep.src
    active = torch.ones(b, s, dtype=torch.bool)
    for l, layer in enumerate(pd.transformer.encoder.layers, start=1):
        new = layer(x, prep.pos, prep.reference_points, x, prep.spatial_shapes, prep.level_start_index, None)
        x = torch.where(active[..., None], new, x)
        ratio = plan.ratio_after(l)
        if ratio is not None:
            ent = _entropy(x, pd.transformer.aux_decoders[l - 1]).masked_fill(~active, float("inf"))
            n_active = int(active[0].sum())
            n_pause = int(ratio * n_active + 1e-9)
            lowest = ent.argsort(dim=1, stable=True)[:, :n_pause]
            active = active.scatter(1, lowest, False)
    _close(res.tokens, x)


@pytest.mark.parametrize("spec", ["3:0.5", "1:0.4,4:0.3"])
@torch.no_grad()
def test_random_pausing_follows_the_generator(model, images, spec):
    plan = PausePlan.parse(spec)
    runs = {}
    for seed in (3, 3, 4):
        torch.manual_seed(11)
        out = model(images, None, AdaptiveSettings(pause=plan, pause_mode="random",
                                                   generator=torch.Generator().manual_seed(seed)))
        after = torch.rand(8)
        torch.manual_seed(11)
        assert torch.equal(after, torch.rand(8)), "random pausing drew from the global RNG, not the generator"
        runs.setdefault(seed, []).append(out)
    (a, b), (c,) = runs[3], runs[4]
    for ra, rb in zip(a.paused, b.paused):
        assert torch.equal(ra.positions, rb.positions)
    assert torch.equal(a.heads["pred_masks"], b.heads["pred_masks"])
    assert not torch.equal(a.paused[0].positions, c.paused[0].positions)
    # Oracle for the first stage (every token active, no padding): the paused tokens are the
    # ones with the lowest of the generator's first uniform draw.
    b_, s = images.shape[0], int(a.token_shapes.prod(1).sum())
    for out, seed in ((a, 3), (c, 4)):
        m = out.paused[0].positions.shape[1]
        scores = torch.rand(b_, s, generator=torch.Generator().manual_seed(seed))
        expected = scores.argsort(1)[:, :m].sort(1).values
        assert torch.equal(out.paused[0].positions.sort(1).values, expected)


@pytest.mark.parametrize("pause", [None, "2:0.5"])
@torch.no_grad()
def test_padding_equals_running_alone(model, pause):
    torch.manual_seed(3)
    sizes = [(64, 96), (96, 64), (32, 32)]
    batch = torch.zeros(3, 3, 96, 96)
    mask = torch.ones(3, 96, 96, dtype=torch.bool)
    singles = []
    for i, (h, w) in enumerate(sizes):
        img = torch.randn(3, h, w)
        singles.append(img)
        batch[i, :, :h, :w] = img
        mask[i, :h, :w] = False
    plan = PausePlan.parse(pause)
    exits = torch.tensor([6, 3, 4])
    out = model(batch, mask, AdaptiveSettings(exits=exits, pause=plan))
    for i, (h, w) in enumerate(sizes):
        alone = model(singles[i][None], None, AdaptiveSettings(exits=int(exits[i]), pause=plan))
        _close(out.gate_features[i], alone.gate_features[0])
        if plan is None:  # pausing counts padded tokens, so it only matches without padding
            _close(out.heads["pred_logits"][i], alone.heads["pred_logits"][0])
            _close(out.heads["pred_masks"][i, :, : h // 4, : w // 4], alone.heads["pred_masks"][0])
    if plan is not None:
        # padded tokens are paused before any image token
        paused = out.paused[0].positions
        token_mask = torch.cat([torch.nn.functional.interpolate(mask[:, None].float(), size=tuple(hw))[:, 0].flatten(1)
                                for hw in out.token_shapes.tolist()], 1).bool()
        n_pad = token_mask.sum(1)
        for i in range(3):
            n = min(int(n_pad[i]), paused.shape[1])
            assert bool(token_mask[i, paused[i]].sum() == n)


@torch.no_grad()
def test_gate_exits(model, images):
    gate = Gate(in_channels=32, exits=(2, 4, 6))
    torch.nn.init.normal_(gate.linear.weight, std=5.0)
    model.set_gate(gate)
    try:
        out = model(images, None, AdaptiveSettings(exits="gate"))
        expected = torch.tensor(gate.exits)[gate(out.gate_features).argmax(-1)]
        assert torch.equal(out.exit_plan, expected)
        ref = model(images, None, AdaptiveSettings(exits=expected))
        _close(out.heads["pred_masks"], ref.heads["pred_masks"], atol=0)
    finally:
        model.set_gate(None)
    with pytest.raises(ValueError, match="does not fit"):
        model.set_gate(Gate(in_channels=32, exits=(2, 7)))


@pytest.mark.parametrize("groups,channels", [(4, 8), (2, 6)])
def test_masked_group_norm_equals_group_norm_on_the_valid_crop(groups, channels):
    from adaseg.models.mask2former.masked_ops import MaskedGroupNorm

    torch.manual_seed(0)
    norm = MaskedGroupNorm(groups, channels)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, channels, 5, 7)
    mask = torch.zeros(2, 5, 7, dtype=torch.bool)
    mask[1, 3:] = True
    mask[1, :, 4:] = True
    out = norm(x, mask)
    torch.testing.assert_close(out[0], torch.nn.functional.group_norm(x[:1], groups, norm.weight, norm.bias)[0])
    crop = torch.nn.functional.group_norm(x[1:, :, :3, :4], groups, norm.weight, norm.bias)[0]
    torch.testing.assert_close(out[1, :, :3, :4], crop)
