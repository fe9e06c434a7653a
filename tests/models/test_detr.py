"""DETR's parts against independent oracles: the matcher against brute force over every
assignment, GIoU against hand computations, the loss on hand-made cases, the auxiliary
labels and the scored boxes by hand. The adaptive contract (exits, pausing, recorded exits)
is tested for ``detr_tiny`` and ``detr_r50`` by tests/models/test_adaptive_contract.py; parity
with transformers' DETR by tests/models/test_detr_hf_parity.py."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import adaseg
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.detr.boxes import cxcywh_to_xyxy, pairwise_giou, xyxy_to_cxcywh
from adaseg.models.detr.criterion import DetrCriterion, box_label_map
from adaseg.models.detr.matcher import HungarianMatcher
from adaseg.models.detr.postprocess import scored_boxes


def _giou_by_hand(a, b):
    """Generalised IoU of two xyxy boxes from the definition, in plain Python."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (hull - union) / hull


@pytest.mark.parametrize("a, b, want", [
    ((0, 0, 2, 2), (1, 1, 3, 3), 1 / 7 - 2 / 9),   # overlap 1, union 7, hull 9
    ((0, 0, 1, 1), (2, 0, 3, 1), -1 / 3),          # disjoint: union 2, hull 3
    ((0, 0, 4, 2), (0, 0, 4, 2), 1.0),             # identical
    ((0, 0, 4, 4), (1, 1, 2, 2), 1 / 16),          # nested: IoU 1/16, hull = union
])
def test_giou_equals_hand_computation(a, b, want):
    got = pairwise_giou(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))
    assert got.shape == (1, 1)
    assert float(got) == pytest.approx(want, abs=1e-12)


def test_pairwise_giou_matches_the_definition_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    a = cxcywh_to_xyxy(torch.rand(5, 4, generator=g, dtype=torch.float64) * 0.5 + 0.1)
    b = cxcywh_to_xyxy(torch.rand(3, 4, generator=g, dtype=torch.float64) * 0.5 + 0.1)
    got = pairwise_giou(a, b)
    for i, j in itertools.product(range(5), range(3)):
        assert float(got[i, j]) == pytest.approx(_giou_by_hand(a[i].tolist(), b[j].tolist()), abs=1e-12)
    torch.testing.assert_close(xyxy_to_cxcywh(cxcywh_to_xyxy(a)), a)
    with pytest.raises(ValueError, match="x1 >= x0"):
        pairwise_giou(torch.tensor([[2.0, 0, 1, 1]]), b.float())


def _cost_by_hand(logits, boxes, labels, tboxes, q, t):
    prob = [math.exp(v) for v in logits[q]]
    p = prob[labels[t]] / sum(prob)
    l1 = sum(abs(x - y) for x, y in zip(boxes[q], tboxes[t]))
    giou = _giou_by_hand(cxcywh_to_xyxy(torch.tensor(boxes[q])).tolist(), cxcywh_to_xyxy(torch.tensor(tboxes[t])).tolist())
    return -1.0 * p + 5.0 * l1 - 2.0 * giou


@pytest.mark.parametrize("seed, q, n", [(0, 4, 2), (1, 5, 3), (2, 3, 3), (3, 5, 1), (4, 6, 4)])
def test_matcher_equals_brute_force_over_all_assignments(seed, q, n):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, q, 4, generator=g, dtype=torch.float64)
    boxes = torch.rand(1, q, 4, generator=g, dtype=torch.float64) * 0.4 + 0.2
    labels = torch.randint(0, 3, (n,), generator=g)
    tboxes = torch.rand(n, 4, generator=g, dtype=torch.float64) * 0.4 + 0.2
    (rows, cols), = HungarianMatcher()({"pred_logits": logits, "pred_boxes": boxes},
                                       [{"labels": labels, "boxes": tboxes}])
    lg, bx, lb, tb = logits[0].tolist(), boxes[0].tolist(), labels.tolist(), tboxes.tolist()
    cost = [[_cost_by_hand(lg, bx, lb, tb, i, j) for j in range(n)] for i in range(q)]
    best = min(sum(cost[perm[t]][t] for t in range(n)) for perm in itertools.permutations(range(q), n))
    assert len(rows) == len(cols) == n and sorted(cols.tolist()) == list(range(n))
    assert rows.tolist() == sorted(rows.tolist())  # ordered by query
    assert sum(cost[i][j] for i, j in zip(rows.tolist(), cols.tolist())) == pytest.approx(best, abs=1e-9)


def test_matcher_handles_an_image_without_boxes():
    out = {"pred_logits": torch.randn(1, 3, 4), "pred_boxes": torch.rand(1, 3, 4) * 0.5 + 0.2}
    (rows, cols), = HungarianMatcher()(out, [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}])
    assert rows.numel() == cols.numel() == 0


def _out(logits, boxes):
    from adaseg.models.adaptive.output import AdaptiveOutput

    return AdaptiveOutput(heads={"pred_logits": logits, "pred_boxes": boxes, "aux_outputs": []}, exits={},
                          exit_plan=torch.full((logits.shape[0],), 6), gate_features=torch.zeros(logits.shape[0], 2),
                          token_shapes=torch.tensor([[2, 2]]), input_size=(8, 8))


def test_loss_on_hand_made_case():
    # 2 queries, K = 2; the target box is query 1's box exactly: L1 = 0, GIoU loss = 0.
    logits = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]]])
    boxes = torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.5, 0.5, 0.4, 0.2]]])
    target = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.2]])}]
    crit = DetrCriterion(num_classes=2, matcher=HungarianMatcher())
    loss = crit(_out(logits, boxes), target)
    # query 0 -> "no object" (class 2, weight 0.1), query 1 -> class 1 (weight 1)
    ce0 = -math.log(math.exp(1.0) / (math.exp(2.0) + 1 + math.exp(1.0)))
    ce1 = -math.log(math.exp(3.0) / (1 + math.exp(3.0) + 1))
    want_ce = (0.1 * ce0 + 1.0 * ce1) / (0.1 + 1.0)
    assert float(loss["loss_ce"]) == pytest.approx(want_ce, rel=1e-6)
    assert float(loss["loss_bbox"]) == pytest.approx(0.0, abs=1e-7)
    assert float(loss["loss_giou"]) == pytest.approx(0.0, abs=1e-6)
    assert float(loss["loss"]) == pytest.approx(want_ce, rel=1e-6)


def test_loss_box_terms_by_hand():
    logits = torch.zeros(1, 1, 3)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])  # xyxy 0.4..0.6
    target = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.6, 0.5, 0.2, 0.2]])}]  # xyxy 0.5..0.7, 0.4..0.6
    loss = DetrCriterion(num_classes=2, matcher=HungarianMatcher())(_out(logits, boxes), target)
    assert float(loss["loss_bbox"]) == pytest.approx(5.0 * 0.1, rel=1e-5)
    giou = _giou_by_hand((0.4, 0.4, 0.6, 0.6), (0.5, 0.4, 0.7, 0.6))  # inter .02, union .06, hull .06
    assert float(loss["loss_giou"]) == pytest.approx(2.0 * (1 - giou), rel=1e-5)


@pytest.mark.parametrize("bad, match", [
    ({"labels": torch.tensor([5]), "boxes": torch.tensor([[0.5, 0.5, 0.1, 0.1]])}, "labels must be in"),
    ({"labels": torch.tensor([0]), "boxes": torch.tensor([[0.95, 0.5, 0.2, 0.1]])}, "inside the image"),
    ({"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.0, 0.1]])}, "w, h > 0"),
    ({"labels": torch.tensor([0])}, "'labels' and 'boxes'"),
])
def test_bad_targets_are_refused(bad, match):
    crit = DetrCriterion(num_classes=2, matcher=HungarianMatcher())
    with pytest.raises(ValueError, match=match):
        crit(_out(torch.zeros(1, 2, 3), torch.full((1, 2, 4), 0.3)), [bad])


def test_box_label_map_by_hand():
    # 8 x 8 valid in a 8 x 10 input; a large box of class 0 and a small one of class 1 inside it
    t = [{"labels": torch.tensor([1, 0]),
          "boxes": xyxy_to_cxcywh(torch.tensor([[2.0, 2.0, 4.0, 4.0], [0.0, 0.0, 6.0, 6.0]]) / 8)}]
    got = box_label_map(t, [(8, 8)], (8, 10), num_classes=2)
    want = torch.full((1, 8, 10), 255)
    want[0, :, :8] = 2
    want[0, 0:6, 0:6] = 0
    want[0, 2:4, 2:4] = 1
    assert torch.equal(got, want)


def test_scored_boxes_by_hand():
    logits = torch.tensor([[[0.0, math.log(3.0), 0.0]]])  # softmax 1/5, 3/5, 1/5 (last: no object)
    boxes = torch.tensor([[[0.5, 0.25, 0.5, 0.5]]])
    (r,) = scored_boxes(logits, boxes, [(40, 100)])
    assert r["labels"].tolist() == [1]
    assert float(r["scores"][0]) == pytest.approx(0.6, rel=1e-6)
    torch.testing.assert_close(r["boxes"], torch.tensor([[25.0, 0.0, 75.0, 20.0]]))


def test_tiny_model_heads_and_training_step():
    torch.manual_seed(0)
    model = adaseg.create_model("detr_tiny", num_classes=3, thing_ids=(0, 1, 2))
    images = torch.randn(2, 3, 64, 96)
    mask = torch.zeros(2, 64, 96, dtype=torch.bool)
    mask[1, :, 64:] = True
    out = model(images, mask, AdaptiveSettings(record_exits=model.exits, pause="2:0.3"))
    for heads in out.exits.values():
        assert heads["pred_logits"].shape == (2, 20, 4) and heads["pred_boxes"].shape == (2, 20, 4)
        assert len(heads["aux_outputs"]) == 2
    assert out.token_shapes.tolist() == [[4, 6]] and out.gate_features.shape == (2, 64)
    targets = [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.3, 0.3, 0.2, 0.2]])},
               {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    loss = model.build_criterion()(out, targets, exit_weights={k: k / 6 for k in model.exits})
    assert float(loss["loss_aux_decoder"].detach()) > 0
    loss["loss"].backward()
    missing = {n for n, p in model.named_parameters() if p.requires_grad and p.grad is None}
    # every parameter takes part but the auxiliary decoders of layers where nothing paused
    assert missing == {f"encoder.aux_decoders.{i}.{w}" for i in (0, 2, 3, 4) for w in ("weight", "bias")}
    model.eval()
    with torch.no_grad():
        preds = model.postprocess(model(images, mask), [(64, 96), (64, 64)], output_sizes=[(128, 192), (64, 64)])
    assert preds[0]["boxes"].shape == (20, 4) and float(preds[0]["boxes"][:, 2].max()) <= 192 + 1e-4
    assert float(preds[1]["boxes"][:, 2].max()) <= 64 + 1e-4
    with pytest.raises(ValueError, match="boxes only"):
        model.postprocess(model(images), [(64, 96)] * 2, task="panoptic")
