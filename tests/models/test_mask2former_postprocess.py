"""Panoptic / semantic / instance inference on hand-built predictions (expected outputs
written out by hand or computed with explicit loops)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adaseg.models.mask2former.postprocess import (
    instance_inference,
    panoptic_inference,
    postprocess,
    semantic_inference,
)

NUM_CLASSES = 3
THINGS = (2,)


def _case():
    """4x4 image, 3 classes (2 is a thing), 6 queries; see the per-query comments."""
    on = lambda rows, cols: [(r, c) for r in rows for c in cols]  # noqa: E731
    regions = [
        on(range(4), range(2)),  # q0 stuff 0: left half
        on(range(2), range(2, 4)),  # q1 thing 2: top right
        on([2], range(2, 4)),  # q2 stuff 0 again: merges into q0's segment
        on(range(4), range(4)),  # q3 "no object"
        on(range(4), range(4)),  # q4 class 1 with low confidence
        on([2, 3], range(4)),  # q5 stuff 1, slightly less confident: mostly covered
    ]
    masks = torch.full((6, 4, 4), -10.0)
    for q, pix in enumerate(regions):
        for r, c in pix:
            masks[q, r, c] = 10.0
    logits = torch.zeros(6, NUM_CLASSES + 1)
    logits[0, 0] = logits[1, 2] = logits[2, 0] = logits[3, 3] = 10.0
    logits[4, 1] = 1.0
    logits[5, 1] = 9.0
    return logits, masks


def test_panoptic_by_hand():
    logits, masks = _case()
    pan, segments = panoptic_inference(logits, masks, num_classes=NUM_CLASSES, thing_ids=THINGS)
    expected = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.int32)
    assert torch.equal(pan, expected)
    score = torch.softmax(logits[0], -1).max().item()
    assert [(s["id"], s["category_id"], s["isthing"]) for s in segments] == [(1, 0, False), (2, 2, True)]
    assert segments[0]["score"] == pytest.approx(score)


def test_panoptic_overlap_threshold_keeps_partly_covered_segment_when_lowered():
    logits, masks = _case()
    # q5 owns 2 of its 8 pixels: kept at overlap 0.2, dropped at the default 0.8
    pan, segments = panoptic_inference(logits, masks, num_classes=NUM_CLASSES, thing_ids=THINGS, overlap_threshold=0.2)
    assert [(s["id"], s["category_id"]) for s in segments] == [(1, 0), (2, 2), (3, 1)]
    assert pan[3, 2:].tolist() == [3, 3]


def test_panoptic_object_mask_threshold():
    logits, masks = _case()
    # q4 (class 1, confidence ~0.48) appears only when the threshold is below its score
    _, segments = panoptic_inference(logits[[4]], masks[[4]], num_classes=NUM_CLASSES, thing_ids=THINGS)
    assert segments == []
    _, segments = panoptic_inference(logits[[4]], masks[[4]], num_classes=NUM_CLASSES, thing_ids=THINGS,
                                     object_mask_threshold=0.4)
    assert [s["category_id"] for s in segments] == [1]


def test_semantic_by_loops():
    torch.manual_seed(0)
    logits, masks = torch.randn(5, NUM_CLASSES + 1), torch.randn(5, 3, 4)
    got = semantic_inference(logits, masks)
    probs = torch.softmax(logits, -1)
    for c in range(NUM_CLASSES):
        for y in range(3):
            for x in range(4):
                ref = sum(probs[q, c].item() * torch.sigmoid(masks[q, y, x]).item() for q in range(5))
                assert got[c, y, x].item() == pytest.approx(ref, abs=1e-6)


def test_instance_by_loops():
    torch.manual_seed(1)
    logits, masks = torch.randn(4, NUM_CLASSES + 1), torch.randn(4, 5, 5)
    got = instance_inference(logits, masks, num_classes=NUM_CLASSES, thing_ids=None, test_topk=5)
    probs = torch.softmax(logits, -1)
    pairs = sorted(((probs[q, c].item(), q, c) for q in range(4) for c in range(NUM_CLASSES)), reverse=True)[:5]
    expected = {}
    for p, q, c in pairs:
        binary = masks[q] > 0
        mscore = (torch.sigmoid(masks[q]) * binary).sum().item() / (binary.sum().item() + 1e-6)
        expected[(q, c)] = p * mscore
    order = got["scores"].argsort(descending=True)
    result = {}
    for i in order.tolist():
        lab = int(got["labels"][i])
        q = [qq for qq in range(4) if torch.equal(masks[qq] > 0, got["masks"][i]) and (qq, lab) in expected][0]
        result[(q, lab)] = got["scores"][i].item()
    assert result.keys() == expected.keys()
    for k in expected:
        assert result[k] == pytest.approx(expected[k], abs=1e-6)
    things = instance_inference(logits, masks, num_classes=NUM_CLASSES, thing_ids=THINGS, test_topk=12)
    assert things["labels"].tolist() == [2] * 4


def test_postprocess_crops_to_image_size_and_resizes():
    logits, masks = _case()
    small = F.interpolate(masks[None], size=(2, 2), mode="bilinear", align_corners=False)
    out = {"pred_logits": torch.stack([logits, logits]), "pred_masks": torch.cat([small, small]), "input_size": (8, 8)}
    sem = postprocess(out, [(8, 8), (6, 5)], task="semantic", num_classes=NUM_CLASSES, thing_ids=THINGS)
    assert sem[0].shape == (8, 8) and sem[1].shape == (6, 5)
    full = F.interpolate(small, size=(8, 8), mode="bilinear", align_corners=False)[0]
    assert torch.equal(sem[1], semantic_inference(logits, full[:, :6, :5]).argmax(0))
    pan = postprocess(out, [(8, 8), (6, 5)], task="panoptic", num_classes=NUM_CLASSES, thing_ids=THINGS,
                      output_sizes=[(16, 16), (12, 10)])
    assert pan[0][0].shape == (16, 16) and pan[1][0].shape == (12, 10)
    inst = postprocess(out, [(8, 8), (6, 5)], task="instance", num_classes=NUM_CLASSES, thing_ids=THINGS)
    assert inst[1]["masks"].shape[-2:] == (6, 5)
    with pytest.raises(ValueError, match="task"):
        postprocess(out, [(8, 8), (6, 5)], task="depth", num_classes=NUM_CLASSES, thing_ids=THINGS)
    with pytest.raises(ValueError, match="image sizes"):
        postprocess(out, [(8, 8)], task="semantic", num_classes=NUM_CLASSES, thing_ids=THINGS)
