"""An imported Hugging Face Mask2Former predicts what transformers' own pipeline predicts.

The oracle is transformers: a small random ``Mask2FormerForUniversalSegmentation`` (weights
perturbed; the class head set so that the test image's queries get several confident,
different classes -- a random head gives every query the same class) and its
``Mask2FormerImageProcessor`` saved with ``save_pretrained`` (the public checkpoint layout),
imported with ``adaseg import-weights --hf``, predicted with :class:`adaseg.Predictor` on the
checkpoint alone (no dataset on disk).

Segments are compared as sets of (category, mask): segment ids and order may differ. Where
the two post-processings differ by design, the HF side is brought to adaseg's rule here and
everything else is compared exactly:

1. HF gives a segment every pixel its query wins (argmax of score x mask probability), even
   where that query's own mask probability is below 0.5; adaseg, like the original
   Mask2Former (detectron2), leaves such pixels void. The HF masks are therefore intersected
   with "the winning kept query's probability >= 0.5", computed from HF's raw outputs.
2. HF resizes mask logits to a fixed 384 x 384 before the target size; adaseg resizes them to
   the padded input size and crops the image. The two agree when the input is 384 x 384
   without padding, which is what is tested.
3. HF fuses only ``label_ids_to_fuse``; adaseg always merges the segments of a stuff class.
   HF is given the stuff ids.
4. HF keeps a segment whose visible share of its mask is > 0.8, adaseg >= 0.8: they differ
   only on an exact tie.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install -e .[test])")

from adaseg.models.mask2former.postprocess import postprocess  # noqa: E402

NAMES = ("cat", "dog", "bus", "sky", "grass")
THINGS = (0, 1, 2)
STUFF = {3, 4}
THRESHOLDS = (0.5, 0.5)  # (score, overlap): several segments of this random model pass them
SIZE = 384


def _image() -> np.ndarray:
    """A smooth random 384 x 384 RGB image (blobs of colour, not noise)."""
    g = torch.Generator().manual_seed(3)
    small = torch.rand(1, 3, 6, 6, generator=g)
    return (torch.nn.functional.interpolate(small, size=(SIZE, SIZE), mode="bicubic", align_corners=False)
            .clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def _processor():
    return transformers.Mask2FormerImageProcessor(size={"shortest_edge": SIZE, "longest_edge": SIZE})


def _pixel_values() -> torch.Tensor:
    from PIL import Image

    return _processor()(images=Image.fromarray(_image()), return_tensors="pt")["pixel_values"]


def _hf_model():
    swin = transformers.SwinConfig(embed_dim=32, depths=[1, 1, 2, 2], num_heads=[1, 2, 4, 8], window_size=7,
                                   out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = transformers.Mask2FormerConfig(
        backbone_config=swin, feature_size=64, mask_feature_size=64, hidden_dim=64, encoder_feedforward_dim=128,
        dim_feedforward=128, encoder_layers=3, decoder_layers=3, num_queries=16, num_attention_heads=4,
        id2label=dict(enumerate(NAMES)))
    torch.manual_seed(0)
    model = transformers.Mask2FormerForUniversalSegmentation(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        # the queries' last hidden states are nearly parallel: project them centred, so the
        # test image's queries get different, confident classes (logit sd 4)
        h = model(pixel_values=_pixel_values()).transformer_decoder_last_hidden_state[0]
        w = torch.randn(len(NAMES) + 1, h.shape[1], generator=torch.Generator().manual_seed(5))
        w *= 4.0 / ((h - h.mean(0)) @ w.T).std()
        model.class_predictor.weight.copy_(w)
        model.class_predictor.bias.copy_(-(w @ h.mean(0)))
    return model


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """(HF model, HF image processor, adaseg checkpoint path)."""
    from recipe_testing import invoke

    root = tmp_path_factory.mktemp("hf_pred")
    model = _hf_model()
    model.save_pretrained(root / "hf")
    processor = _processor()
    processor.save_pretrained(root / "hf")
    out = root / "m2f.safetensors"
    result = invoke("import-weights", "--hf", root / "hf", "--thing-ids", ",".join(map(str, THINGS)), "--out", out)
    assert result.exit_code == 0, result.output
    return model, processor, out


def _expected(hf_out, threshold: float, overlap: float) -> set:
    """HF's panoptic segments as {(category, mask bytes)}, with difference 1 applied."""
    res = _processor().post_process_panoptic_segmentation(hf_out, threshold=threshold, mask_threshold=0.5,
                                                          overlap_mask_area_threshold=overlap,
                                                          label_ids_to_fuse=STUFF)[0]
    logits = torch.nn.functional.interpolate(hf_out.masks_queries_logits, size=(SIZE, SIZE), mode="bilinear",
                                             align_corners=False)[0]
    scores, labels = hf_out.class_queries_logits[0].softmax(-1).max(-1)
    keep = labels.ne(len(NAMES)) & (scores > threshold)
    probs = logits.sigmoid()[keep]
    owner = (scores[keep].view(-1, 1, 1) * probs).argmax(0)
    confident = probs.gather(0, owner[None])[0] >= 0.5
    out = set()
    for s in res["segments_info"]:
        mask = (res["segmentation"] == s["id"]) & confident
        if mask.any():
            out.add((int(s["label_id"]), mask.numpy().tobytes()))
    return out


def _ours(panoptic: np.ndarray | torch.Tensor, segments, category_key: str) -> set:
    panoptic = torch.as_tensor(panoptic)
    return {(int(s[category_key]), (panoptic == s["id"]).numpy().tobytes()) for s in segments}


@pytest.mark.parametrize("threshold,overlap", [THRESHOLDS, (0.8, 0.8)])
def test_postprocess_equals_transformers_on_the_same_outputs(imported, threshold, overlap):
    """adaseg's post-processing of transformers' raw outputs == transformers' post-processing."""
    model, _, _ = imported
    with torch.no_grad():
        hf_out = model(pixel_values=_pixel_values())
    expected = _expected(hf_out, threshold, overlap)
    panoptic, segments = postprocess({"pred_logits": hf_out.class_queries_logits,
                                      "pred_masks": hf_out.masks_queries_logits, "input_size": (SIZE, SIZE)},
                                     [(SIZE, SIZE)], task="panoptic", num_classes=len(NAMES), thing_ids=THINGS,
                                     object_mask_threshold=threshold, overlap_threshold=overlap)[0]
    ours = _ours(panoptic, segments, "category_id")
    assert ours  # guard against a trivially equal comparison
    if (threshold, overlap) == THRESHOLDS:
        cats = [c for c, _ in ours]
        assert len(ours) >= 3 and set(cats) & set(THINGS) and set(cats) & STUFF, cats
    assert ours == expected


def test_predictor_on_the_checkpoint_equals_transformers(imported, tmp_path):
    """Image file -> adaseg.Predictor(checkpoint) == HF image processor -> model -> post-processing."""
    from PIL import Image

    import adaseg

    model, processor, ckpt = imported
    rgb = _image()
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    predictor = adaseg.Predictor(ckpt, device="cpu", flops=False)
    # thresholds set alike on both sides
    predictor.model.object_mask_threshold, predictor.model.overlap_threshold = THRESHOLDS
    # the checkpoint's categories and resize travel with it: labelled without a dataset
    assert [(c.id, c.name, c.isthing) for c in predictor.meta.categories] == \
        [(i, n, i in THINGS) for i, n in enumerate(NAMES)]
    loaded = predictor.load(str(tmp_path / "photo.png"))
    pixel_values = processor(images=Image.fromarray(rgb), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(predictor.sample(loaded)["image"][None], pixel_values, atol=1e-4, rtol=0)
    pred = predictor([str(tmp_path / "photo.png")])[0]
    with torch.no_grad():
        hf_out = model(pixel_values=pixel_values)
    expected = _expected(hf_out, *THRESHOLDS)
    ours = _ours(pred.panoptic, pred.segments, "category_id")
    assert len(expected) >= 3
    assert sorted(c for c, _ in ours) == sorted(c for c, _ in expected)
    # the forward passes agree to float error (tests/models/test_hf_parity.py); a pixel whose
    # winning score or probability sits within that error of a tie may flip: allow 0.1%
    for c, m in ours:
        mine = np.frombuffer(m, dtype=bool)
        flips = min(np.count_nonzero(mine != np.frombuffer(o, dtype=bool)) for k, o in expected if k == c)
        assert flips <= 0.001 * mine.size, (NAMES[c], flips)
