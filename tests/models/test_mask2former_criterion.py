"""Matcher, mask losses, class loss, PAUMER's auxiliary loss and the weighted exit sum.

Oracles: brute-force search over assignments; losses written out by hand (math module);
explicit Python loops.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from m2f_testing import tiny_model

import adaseg
from adaseg.models.adaptive.plan import PausePlan
from adaseg.models.adaptive.output import AdaptiveOutput
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.adaptive.losses import aux_decoder_loss, token_labels
from adaseg.models.mask2former.criterion import SetCriterion, dice_loss, pad_targets, sigmoid_ce_loss
from adaseg.models.adaptive.pause_selection import AuxRecord
from adaseg.models.mask2former.matcher import HungarianMatcher, pairwise_dice, pairwise_sigmoid_ce
from adaseg.models.mask2former.point_sampling import point_sample, uncertain_points


def _softplus(x):
    return math.log1p(math.exp(x))


def test_sigmoid_ce_and_dice_by_hand():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # BCE(x, 1) = softplus(-x), BCE(x, 0) = softplus(x)
    row0 = (_softplus(-0.0) + _softplus(2.0)) / 2
    row1 = (_softplus(1.0) + _softplus(-3.0)) / 2
    assert sigmoid_ce_loss(logits, labels, 2.0).item() == pytest.approx((row0 + row1) / 2, abs=1e-6)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    d0 = 1 - (2 * sig(0.0) + 1) / (sig(0.0) + sig(2.0) + 1 + 1)
    d1 = 1 - (2 * (sig(-1.0) + sig(3.0)) + 1) / (sig(-1.0) + sig(3.0) + 2 + 1)
    assert dice_loss(logits, labels, 1.0).item() == pytest.approx(d0 + d1, abs=1e-6)


def test_pairwise_costs_match_loops():
    torch.manual_seed(0)
    inputs, targets = torch.randn(4, 7), (torch.rand(3, 7) > 0.5).float()
    ce, dice = pairwise_sigmoid_ce(inputs, targets), pairwise_dice(inputs, targets)
    for q in range(4):
        for t in range(3):
            assert ce[q, t].item() == pytest.approx(sigmoid_ce_loss(inputs[q : q + 1], targets[t : t + 1], 1.0).item(), abs=1e-5)
            assert dice[q, t].item() == pytest.approx(dice_loss(inputs[q : q + 1], targets[t : t + 1], 1.0).item(), abs=1e-5)


def test_point_sample_at_pixel_centres_reads_pixels():
    maps = torch.arange(6.0).view(1, 1, 2, 3)
    coords = torch.tensor([[[0.5 / 3, 0.25], [2.5 / 3, 0.75], [1.5 / 3, 0.25]]])
    assert point_sample(maps, coords)[0, 0].tolist() == pytest.approx([0.0, 5.0, 1.0], abs=1e-6)


def test_cost_matrix_by_hand():
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=4)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    masks = torch.tensor([[[3.0, -3.0], [1.0, 0.0]], [[-2.0, 2.0], [0.5, -1.0]]])
    labels = torch.tensor([1])
    tmask = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    coords = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])  # pixel centres
    cost = matcher.cost_matrix(logits, masks, labels, tmask, coords)
    t = [1.0, 0.0, 1.0, 1.0]
    for q in range(2):
        x = masks[q].flatten().tolist()
        ce = sum(_softplus(-v) if tt else _softplus(v) for v, tt in zip(x, t)) / 4
        p = [1 / (1 + math.exp(-v)) for v in x]
        dice = 1 - (2 * sum(pp * tt for pp, tt in zip(p, t)) + 1) / (sum(p) + sum(t) + 1)
        prob = torch.softmax(logits[q], -1)[1].item()
        assert cost[q, 0].item() == pytest.approx(5 * ce - 2 * prob + 5 * dice, abs=1e-5)


@pytest.mark.parametrize("q,n,seed", [(5, 3, 0), (4, 4, 1), (6, 2, 2), (3, 1, 3)])
def test_matcher_is_optimal_vs_brute_force(q, n, seed):
    torch.manual_seed(seed)
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=64)
    outputs = {"pred_logits": torch.randn(1, q, 4), "pred_masks": torch.randn(1, q, 6, 6) * 3}
    target = {"labels": torch.randint(0, 3, (n,)), "masks": torch.rand(n, 12, 12) > 0.5}
    torch.manual_seed(100)
    (rows, cols), = matcher(outputs, [target])
    torch.manual_seed(100)
    coords = torch.rand(64, 2)
    cost = matcher.cost_matrix(outputs["pred_logits"][0], outputs["pred_masks"][0], target["labels"],
                               target["masks"].float(), coords)
    assert len(rows) == n and sorted(cols.tolist()) == list(range(n))
    got = sum(cost[r, c].item() for r, c in zip(rows.tolist(), cols.tolist()))
    best = min(sum(cost[perm[t], t].item() for t in range(n)) for perm in itertools.permutations(range(q), n))
    assert got == pytest.approx(best, abs=1e-5)


def test_matcher_empty_target():
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=16)
    out = {"pred_logits": torch.randn(1, 3, 4), "pred_masks": torch.randn(1, 3, 4, 4)}
    (rows, cols), = matcher(out, [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 8, 8, dtype=torch.bool)}])
    assert rows.numel() == 0 and cols.numel() == 0


def test_uncertain_points_pick_the_most_uncertain_candidates():
    logits = torch.linspace(-5, 5, 32).view(1, 1, 1, 32).expand(2, 1, 8, 32).contiguous()
    torch.manual_seed(7)
    coords = uncertain_points(logits, 20, 3.0, 0.75)
    torch.manual_seed(7)
    candidates = torch.rand(2, 60, 2)
    unc = -point_sample(logits, candidates).abs()[:, 0]
    expected = torch.gather(candidates, 1, unc.topk(15, dim=1).indices[..., None].expand(2, 15, 2))
    assert coords.shape == (2, 20, 2)
    torch.testing.assert_close(coords[:, :15], expected)


def test_token_labels_and_aux_loss_by_hand():
    sem = torch.arange(16).view(1, 4, 4)
    sem[0, 1, 1] = 255
    shapes = torch.tensor([[1, 1], [2, 2]])
    labels = token_labels(sem, shapes)
    assert labels.tolist() == [[sem[0, 2, 2].item(), 255, sem[0, 1, 3].item(), sem[0, 3, 1].item(), sem[0, 3, 3].item()]]
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 16)
    rec = AuxRecord(layer=2, rows=torch.tensor([0]), token_idx=torch.tensor([[0, 1, 4]]), logits=logits)
    got = aux_decoder_loss([rec], sem, shapes)
    # token 1 is ignored (255); mean CE of tokens 0 and 4
    ce0 = -torch.log_softmax(logits[0, 0], -1)[10].item()
    ce4 = -torch.log_softmax(logits[0, 2], -1)[15].item()
    assert got.item() == pytest.approx((ce0 + ce4) / 2, abs=1e-6)


def _targets(b, size, num_classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    h, w = size
    for i in range(b):
        n = 2 + i % 2
        masks = torch.zeros(n, h, w, dtype=torch.bool)
        labels = torch.randint(0, num_classes, (n,), generator=g)
        sem = torch.full((h, w), 255, dtype=torch.long)
        for j in range(n):
            y, x = int(torch.randint(0, h // 2, (1,), generator=g)), int(torch.randint(0, w // 2, (1,), generator=g))
            masks[j, y : y + h // 2, x : x + w // 2] = True
            masks[j] &= ~masks[:j].any(0)
            sem[masks[j]] = labels[j]
        out.append({"masks": masks, "labels": labels, "semantic": sem})
    return out


def test_class_loss_by_hand():
    crit = SetCriterion(num_classes=3, matcher=HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0,
                        num_points=64), num_points=64)
    tmask = torch.zeros(1, 8, 8, dtype=torch.bool)
    tmask[0, :, :4] = True
    pred = torch.where(tmask[0], 10.0, -10.0)
    masks = torch.stack([-pred, -pred, pred])[None]  # query 2 is the target's mask
    logits = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.0, 2.0], [0.5, 1.5, -0.5, 0.0]]])
    out = AdaptiveOutput(heads={"pred_logits": logits, "pred_masks": F.interpolate(masks, size=(2, 2))}, exits={},
                         exit_plan=None, gate_features=torch.zeros(1, 4), input_size=(8, 8))
    res = crit(out, [{"masks": tmask, "labels": torch.tensor([1])}])
    w = [0.1, 0.1, 1.0]
    tgt = [3, 3, 1]
    ce = [-torch.log_softmax(logits[0, i], -1)[tgt[i]].item() for i in range(3)]
    expected = sum(wi * ci for wi, ci in zip(w, ce)) / sum(w)
    assert res["loss_ce"].item() == pytest.approx(2.0 * expected, abs=1e-6)
    assert res["loss_aux_decoder"].item() == 0.0


def test_pad_targets():
    t = _targets(1, (6, 5), 3)
    (p,) = pad_targets(t, (8, 8))
    assert p["masks"].shape[-2:] == (8, 8) and not p["masks"][:, 6:].any() and not p["masks"][:, :, 5:].any()
    assert (p["semantic"][6:] == 255).all() and torch.equal(p["semantic"][:6, :5], t[0]["semantic"])
    with pytest.raises(ValueError, match="larger than the input"):
        pad_targets(t, (4, 8))


def test_all_exits_loss_is_the_weighted_sum_and_trains():
    model = tiny_model(seed=0).train()
    crit = model.build_criterion(aux_weight=0.1)
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    targets = _targets(2, (64, 64), model.num_classes)
    pause = PausePlan(((3, 0.4),))
    out = model(images, None, AdaptiveSettings(record_exits=model.exits, pause=pause))
    assert [r.layer for r in out.aux_logits] == [3]
    alpha = {k: k / 6 for k in model.exits}
    torch.manual_seed(11)
    res = crit(out, targets, exit_weights=alpha)
    torch.manual_seed(11)
    separate = {k: crit(replace(out.at_exit(k), aux_logits=[]), targets)["loss"] for k in model.exits}
    expected = sum(alpha[k] * separate[k] for k in model.exits) + 0.1 * res["loss_aux_decoder"]
    assert res["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    for k in model.exits:
        assert res[f"loss_exit{k}"].item() == pytest.approx(separate[k].item(), rel=1e-5)
    assert res["loss_aux_decoder"].item() > 0
    res["loss"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    # only the auxiliary decoders of layers that did not pause are unused
    assert no_grad and all(n.startswith("pixel_decoder.transformer.aux_decoders.") for n in no_grad)
    assert not any(n.startswith("pixel_decoder.transformer.aux_decoders.2.") for n in no_grad)
    with pytest.raises(ValueError, match="exit_weights"):
        crit(out, targets)


def test_registered_tiny_model_forward_backward():
    torch.manual_seed(0)
    model = adaseg.create_model("m2f_tiny", num_classes=4, thing_ids=(2, 3)).train()
    crit = model.build_criterion()
    images = torch.randn(2, 3, 64, 64)
    out = model(images, None, AdaptiveSettings(exits=torch.tensor([2, 6]), pause=PausePlan(((2, 0.5),))))
    res = crit(out, _targets(2, (64, 64), 4))
    assert torch.isfinite(res["loss"])
    res["loss"].backward()
    assert model.predictor.class_embed.weight.grad is not None
    assert model.backbone.channels and all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu_trains(dtype, monkeypatch):
    import adaseg.nn.ms_deform_attn as msda_module

    seen = []
    real = msda_module.ms_deform_attn

    def spy(value, shapes, starts, locations, weights):
        seen.append({value.dtype, locations.dtype, weights.dtype})
        return real(value, shapes, starts, locations, weights)

    monkeypatch.setattr(msda_module, "ms_deform_attn", spy)
    model = tiny_model(seed=0).train()
    crit = model.build_criterion()
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=dtype):
        out = model(images, None, AdaptiveSettings(record_exits=model.exits, pause=PausePlan(((2, 0.5),))))
        res = crit(out, _targets(2, (64, 64), model.num_classes), exit_weights={k: 1.0 for k in model.exits})
    assert out.exits[6]["pred_masks"].dtype == dtype
    assert seen and all(d == {torch.float32} for d in seen)  # the op gets one supported dtype
    assert torch.isfinite(res["loss"])
    res["loss"].backward()
    assert torch.isfinite(model.predictor.class_embed.weight.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cuda_matches_fp32(dtype):
    model = tiny_model(seed=0).cuda()
    images = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.no_grad():
        ref = model(images, None, AdaptiveSettings(exits=torch.tensor([3, 6])))
        with torch.autocast("cuda", dtype=dtype):
            low = model(images, None, AdaptiveSettings(exits=torch.tensor([3, 6])))
    torch.testing.assert_close(low.heads["pred_masks"].float(), ref.heads["pred_masks"], atol=0.3, rtol=0.05)


def test_images_without_segments():
    model = tiny_model(seed=0).train()
    crit = model.build_criterion()
    images = torch.randn(2, 3, 64, 64)
    empty = {"masks": torch.zeros(0, 64, 64, dtype=torch.bool), "labels": torch.zeros(0, dtype=torch.long),
             "semantic": torch.full((64, 64), 255, dtype=torch.long)}
    out = model(images, None, AdaptiveSettings(pause=PausePlan(((2, 0.5),))))
    res = crit(out, [empty, empty])
    assert res["loss_mask"].item() == 0.0 and res["loss_dice"].item() == 0.0 and res["loss_aux_decoder"].item() == 0.0
    # only "no object" targets: the class loss is the weighted CE to class K
    expected = F.cross_entropy(out.heads["pred_logits"].transpose(1, 2), torch.full((2, 10), model.num_classes))
    assert res["loss_ce"].item() == pytest.approx(2.0 * expected.item(), rel=1e-5)
    res["loss"].backward()
    mixed = crit(model(images), [empty, _targets(1, (64, 64), model.num_classes)[0]])
    assert torch.isfinite(mixed["loss"]) and mixed["loss_mask"].item() > 0
