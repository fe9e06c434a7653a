"""The exit-2 gate (``fit-gate --features exit2``): an exit plan decided after layer 2 inside the
encoder loop (:class:`adaseg.models.adaptive.deferred.DeferredPlan`).

Oracles: the decision and its features are unchanged when layers 3..K change (they cannot
see them), while the outputs change; the features equal a hand-written per-level mean of the
tokens a separate fixed-exit-2 encoder pass leaves; a mixed batch equals each image run alone
(the contract: a batch costs and gives what its images do alone); models that cannot provide
the features refuse such a gate with one line.
"""

from __future__ import annotations

import pytest
import torch
from m2f_testing import tiny_model

import adaseg
from adaseg.models.adaptive.deferred import pool_levels
from adaseg.models.adaptive.gate import Gate
from adaseg.models.adaptive.settings import AdaptiveSettings


def _hand_pooled(tokens: torch.Tensor, padding: torch.Tensor | None, shapes: list[tuple[int, int]]) -> torch.Tensor:
    """(B, N, C) -> (B, L * C): a loop over images and levels, the mean of the real tokens."""
    rows = []
    for i in range(tokens.shape[0]):
        start, parts = 0, []
        for h, w in shapes:
            level = tokens[i, start:start + h * w]
            real = level if padding is None else level[~padding[i, start:start + h * w]]
            parts.append(real.mean(0) if real.shape[0] else torch.zeros(tokens.shape[2]))
            start += h * w
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def _mixed_gate(model, images, padding=None, seed=0, margin=1e-3) -> Gate:
    """An exit-2 gate whose exits differ over ``images`` (random directions, the bias put at the
    logits' median so that no one exit wins everywhere), drawn again (next seed) until every
    image's best logit leads the next by ``margin``: a tie would let float noise between a
    batch and a single image (~1e-6) flip the argmax, which no contract promises."""
    with torch.no_grad():
        feats = model(images, padding, AdaptiveSettings(record_exits=model.exits, record_features=True)).layer_features
    gate = Gate(in_channels=model.exit2_channels, exits=model.exits, features="exit2")
    for s in range(seed, seed + 20):
        gen = torch.Generator().manual_seed(s)
        with torch.no_grad():
            gate.linear.weight.copy_(torch.randn(gate.linear.weight.shape, generator=gen) / feats.std(0).clamp_min(1e-6))
            gate.linear.bias.copy_(-(feats @ gate.linear.weight.T).median(0).values)
            top2 = gate(feats).topk(2, dim=1).values
        if (top2[:, 0] - top2[:, 1]).min() > margin:
            break
    else:
        raise AssertionError("no gate with clear decisions in 20 draws")
    model.set_gate(gate)
    return gate


def test_pool_levels_is_the_mean_of_each_levels_real_tokens():
    gen = torch.Generator().manual_seed(0)
    shapes = [(2, 3), (4, 1), (1, 1)]
    tokens = torch.randn(3, 11, 5, generator=gen)
    padding = torch.rand(3, 11, generator=gen) > 0.6
    padding[2, 10] = True  # a level with no real token gives zeros
    got = pool_levels(tokens, padding, torch.tensor(shapes))
    torch.testing.assert_close(got, _hand_pooled(tokens, padding, shapes))
    torch.testing.assert_close(pool_levels(tokens, None, torch.tensor(shapes)), _hand_pooled(tokens, None, shapes))


@torch.no_grad()
def test_decision_sees_nothing_of_layers_after_2():
    """Perturbing layers 3..K leaves every image's exit and the gate's features as they were;
    the outputs of images that run past layer 2 change."""
    model = tiny_model(seed=0)
    images = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    _mixed_gate(model, images)
    before = model(images, None, AdaptiveSettings(exits="gate"))
    exits = before.exit_plan.tolist()
    assert len(set(exits)) > 1 and max(exits) > 2, exits
    gen = torch.Generator().manual_seed(2)
    for layer in model.pixel_decoder.transformer.encoder.layers[2:]:
        for p in layer.parameters():
            p.add_(torch.randn(p.shape, generator=gen))
    after = model(images, None, AdaptiveSettings(exits="gate"))
    assert after.exit_plan.tolist() == exits
    assert torch.equal(after.layer_features, before.layer_features)
    late = [i for i, e in enumerate(exits) if e > 2]
    diff = (after.heads["pred_logits"] - before.heads["pred_logits"]).abs().amax((1, 2))
    assert (diff[late] > 1e-3).all(), diff
    exit2 = [i for i, e in enumerate(exits) if e == 2]
    assert torch.equal(diff[exit2], torch.zeros(len(exit2))), diff


@torch.no_grad()
def test_features_equal_pooled_tokens_of_a_fixed_exit2_pass():
    """The recorded features (Step B's) and the decision's features are the per-level mean of
    the tokens a separate encoder pass at fixed exit 2 leaves (padding left out)."""
    model = tiny_model(seed=3)
    images = torch.randn(3, 3, 96, 64, generator=torch.Generator().manual_seed(4))
    padding = torch.zeros(3, 96, 64, dtype=torch.bool)
    padding[1, 64:] = True
    padding[2, :, 32:] = True
    prep = model.prepare(images, padding)
    enc = model.encode(prep, settings=AdaptiveSettings(exits=2), exit_plan=torch.full((3,), 2), keep_aux=False)
    shapes = [tuple(s) for s in prep.token_shapes.tolist()]
    expected = _hand_pooled(enc.tokens, prep.pixel.token_mask, shapes)
    recorded = model(images, padding, AdaptiveSettings(record_exits=model.exits, record_features=True))
    torch.testing.assert_close(recorded.layer_features, expected)
    _mixed_gate(model, images, padding)
    torch.testing.assert_close(model(images, padding, AdaptiveSettings(exits="gate")).layer_features, expected)


@pytest.mark.parametrize("kind", [dict(), dict(encoder="lite"), dict(encoder="rt", enc_layers=5, enc_points=None)],
                         ids=["deform", "lite", "rt"])
@torch.no_grad()
def test_mixed_batch_equals_each_image_alone(kind):
    model = tiny_model(seed=5, **kind)
    images = torch.randn(5, 3, 64, 96, generator=torch.Generator().manual_seed(6))
    padding = torch.zeros(5, 64, 96, dtype=torch.bool)
    padding[0, :, 64:] = True
    padding[3, 32:] = True
    _mixed_gate(model, images, padding, seed=1)
    batch = model(images, padding, AdaptiveSettings(exits="gate"))
    exits = batch.exit_plan.tolist()
    assert len(set(exits)) > 2, exits
    for i in range(5):
        alone = model(images[i:i + 1], padding[i:i + 1], AdaptiveSettings(exits="gate"))
        assert alone.exit_plan.tolist() == [exits[i]]
        torch.testing.assert_close(alone.heads["pred_logits"][0], batch.heads["pred_logits"][i], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(alone.heads["pred_masks"][0], batch.heads["pred_masks"][i], atol=1e-4, rtol=1e-4)
    # and equals the same exits given as a (B,) plan before layer 1
    given = model(images, padding, AdaptiveSettings(exits=torch.tensor(exits)))
    torch.testing.assert_close(given.heads["pred_logits"], batch.heads["pred_logits"])


def test_models_that_cannot_provide_the_features_refuse_with_one_line():
    torch.manual_seed(0)
    segmenter = adaseg.create_model("segmenter_tiny", num_classes=4).eval()
    assert "does not provide its encoder tokens after layer 2" in segmenter.exit2_refusal()
    gate = Gate(in_channels=8, exits=segmenter.exits, features="exit2")
    with pytest.raises(ValueError, match="an exit-2 gate does not fit this model: SegmenterModel|an exit-2 gate"):
        segmenter.set_gate(gate)
    with pytest.raises(ValueError, match="record_features: .*does not provide"):
        segmenter(torch.randn(1, 3, 64, 64), None, AdaptiveSettings(record_exits=segmenter.exits,
                                                                    record_features=True))
    shallow = tiny_model(seed=0, enc_layers=2)
    assert "2 layers: a decision after layer 2 is not an early point" in shallow.exit2_refusal()
    model = tiny_model(seed=0)
    assert model.exit2_refusal() is None and model.exit2_channels == 3 * 32
    with pytest.raises(ValueError, match="does not fit this model"):
        model.set_gate(Gate(in_channels=32, exits=model.exits, features="exit2"))  # backbone-sized input
    with pytest.raises(ValueError, match="cannot pick exit 1"):
        Gate(in_channels=96, exits=(1, 2, 6), features="exit2")
    with pytest.raises(ValueError, match="features must be one of backbone, exit2"):
        Gate(in_channels=96, exits=(2, 6), features="exit3")
