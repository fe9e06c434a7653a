"""Segmenter beyond the contract every model shares (tests/models/test_adaptive_contract.py):
exits and paused tokens against the ViT run by hand, attention without paused tokens,
entropy selection, padding, decoder, loss, sliding-window inference.

Oracles are independent of the adaptive loop: the ViT's own blocks run by hand (for paused
features, "paused tokens are not attended to", per-exit outputs), per-image runs (for mixed
exits), float64 entropy written out from its definition, F.cross_entropy on hand-picked patch
centres, and cosine similarities for the L2-normalised mask products.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adaseg.models.adaptive.plan import PausePlan
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.adaptive.gate import Gate
from adaseg.models.segmenter import Segmenter
from adaseg.models.segmenter.configs import segmenter_tiny, segmenter_vit_s, segmenter_vit_ti
from adaseg.models.segmenter.sliding import segmenter_inference_sliding, window_starts
from adaseg.models.backbones.vit import token_validity, vit_tiny_cpu

ATOL = 1e-5
K = 5


def _model(seed: int = 0, depth: int = 4) -> Segmenter:
    torch.manual_seed(seed)
    enc = vit_tiny_cpu(img_size=64, embed_dim=64, depth=depth, num_heads=2)
    return Segmenter(encoder=enc, num_classes=K, exits=tuple(range(1, depth + 1))).eval()


@pytest.fixture(scope="module")
def model() -> Segmenter:
    return _model()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _encode(model: Segmenter, images: torch.Tensor, mask: torch.Tensor | None = None, **settings):
    """The encoder's run result (final-normed patch maps) at full depth for ``settings``."""
    prep = model.prepare(images, mask)
    plan = torch.full((images.shape[0],), model.depth, dtype=torch.long)
    return model.encode(prep, settings=AdaptiveSettings(**settings), exit_plan=plan, keep_aux=False)


def _by_hand(model: Segmenter, x: torch.Tensor, layers: int) -> torch.Tensor:
    """(B, 1 + N, D) un-normed tokens after ``layers`` blocks, straight through the ViT."""
    t, _ = model.encoder.embed(x)
    for blk in model.encoder.blocks[:layers]:
        t = blk(t)
    return t


def test_forward_backward_tiny():
    model = _model().train()
    x = torch.randn(2, 3, 64, 48)
    out = model(x, None, AdaptiveSettings(record_exits=model.exits, pause=PausePlan.parse("2:0.5")))
    assert set(out.exits) == {1, 2, 3, 4}
    for k, o in out.exits.items():
        assert o["sem_logits"].shape == (2, K, 64, 48)
    assert out.gate_features.shape == (2, 64)
    assert out.token_shapes.tolist() == [[8, 6]]
    assert [r.layer for r in out.aux_logits] == [2]
    assert out.aux_logits[0].logits.shape == (2, 48, K)
    crit = model.build_criterion()
    targets = [{"semantic": torch.randint(0, K, (64, 48))} for _ in range(2)]
    losses = crit(out, targets, exit_weights={k: float(k) for k in out.exits})
    losses["loss"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    # Only the auxiliary decoders of layers that did not pause stay without gradient.
    assert sorted(no_grad) == sorted(f"aux_decoders.{i}.{s}" for i in (0, 2) for s in ("weight", "bias"))


def test_exit_leaves_encoder_with_its_own_depth(model, images):
    """Exit k output = final norm + decoder on the ViT's tokens after k blocks, by hand."""
    with torch.no_grad():
        for k in (1, 3):
            tok = model.encoder.norm(_by_hand(model, images, k))[:, 1:]
            want = model.decode(tok, model.prepare(images))["sem_logits"]
            got = model(images, None, AdaptiveSettings(exits=k)).heads["sem_logits"]
            torch.testing.assert_close(got, want, rtol=0, atol=ATOL)


@pytest.mark.parametrize("layer,ratio", [(1, 0.5), (2, 0.25)])
def test_paused_tokens_come_back_unchanged(model, images, layer, ratio):
    with torch.no_grad():
        enc = _encode(model, images, pause=PausePlan(((layer, ratio),)))
        at_pause = model.encoder.norm(_by_hand(model, images, layer))[:, 1:]
        full = model.encoder.norm(_by_hand(model, images, model.depth))[:, 1:]
    (record,) = enc.paused
    l, rows, paused = record.layer, record.rows, record.positions
    assert l == layer and rows.tolist() == [0, 1, 2, 3]
    assert paused.shape == (4, int(ratio * 64))
    for i in range(4):
        idx = paused[i]
        torch.testing.assert_close(enc.tokens[i, idx], at_pause[i, idx], rtol=0, atol=ATOL)
        kept = torch.ones(64, dtype=torch.bool)
        kept[idx] = False
        # kept tokens were updated further (and differ from an unpaused run: fewer keys).
        assert not torch.allclose(enc.tokens[i, kept], at_pause[i, kept], atol=1e-3)
        assert not torch.allclose(enc.tokens[i, kept], full[i, kept], atol=1e-3)


def test_paused_tokens_are_not_attended_to(model, images):
    """After pausing at layer 2, the kept tokens evolve exactly as if the paused ones did not
    exist: run the remaining blocks by hand on [cls, kept] only."""
    with torch.no_grad():
        enc = _encode(model, images, pause=PausePlan(((2, 0.5),)))
        t = _by_hand(model, images, 2)
        paused = enc.paused[0].positions
        for i in range(4):
            kept = torch.ones(64, dtype=torch.bool)
            kept[paused[i]] = False
            seq = torch.cat([t[i : i + 1, :1], t[i : i + 1, 1:][:, kept]], dim=1)
            for blk in model.encoder.blocks[2:]:
                seq = blk(seq)
            want = model.encoder.norm(seq)[0, 1:]
            torch.testing.assert_close(enc.tokens[i, kept], want, rtol=0, atol=ATOL)


def test_entropy_pauses_the_most_confident_tokens(model, images):
    layer, ratio = 2, 0.4
    with torch.no_grad():
        enc = _encode(model, images, pause=PausePlan(((layer, ratio),)))
        tok = _by_hand(model, images, layer)[:, 1:].double()
        head = model.aux_decoders[layer - 1]
        p = torch.softmax(tok @ head.weight.double().t() + head.bias.double(), -1)
        entropy = -(p * p.log()).sum(-1)
    paused = enc.paused[0].positions
    n_paused = 64 - (64 - int(ratio * 64))
    for i in range(4):
        want = torch.argsort(entropy[i])[:n_paused].sort().values
        assert torch.equal(paused[i], want)


def test_random_pausing_is_seeded_and_differs_from_entropy(model, images):
    plan = PausePlan(((1, 0.5),))
    with torch.no_grad():
        a = _encode(model, images, pause=plan, pause_mode="random", generator=torch.Generator().manual_seed(3))
        b = _encode(model, images, pause=plan, pause_mode="random", generator=torch.Generator().manual_seed(3))
        e = _encode(model, images, pause=plan)
    assert torch.equal(a.paused[0].positions, b.paused[0].positions)
    assert a.paused[0].positions.shape == (4, 32)
    assert not torch.equal(a.paused[0].positions, e.paused[0].positions)


def test_gate_features_and_gate_exits(model, images):
    with torch.no_grad():
        out = model(images, None, AdaptiveSettings(exits=2))
        emb, _ = model.encoder.embed(images)
        torch.testing.assert_close(out.gate_features, emb[:, 1:].mean(1), rtol=0, atol=1e-6)
        gate = Gate(in_channels=64, exits=(1, 3))
        model.set_gate(gate)
        try:
            chosen = gate.predict(out.gate_features)
            got = model(images, None, AdaptiveSettings(exits="gate"))
            assert torch.equal(got.exit_plan, chosen)
            want = model(images, None, AdaptiveSettings(exits=chosen)).heads["sem_logits"]
            torch.testing.assert_close(got.heads["sem_logits"], want, rtol=0, atol=ATOL)
        finally:
            model.set_gate(None)


def test_token_validity_hand_case():
    mask = torch.zeros(1, 20, 12, dtype=torch.bool)
    mask[:, 16:, :] = True  # bottom 4 rows padded
    mask[:, :, 9:] = True  # right 3 columns padded
    valid = token_validity(mask, 8, (3, 2))
    # patches (row, col): rows 0-7, 8-15 real; row 16-23 only padding (pixels 16..19 + 4 pad).
    assert valid.view(3, 2).tolist() == [[True, True], [True, True], [False, False]]
    assert token_validity(torch.zeros(1, 16, 16, dtype=torch.bool), 8, (2, 2)) is None


def test_padding_patches_pause_first_and_are_ignored(model, images):
    mask = torch.zeros(4, 64, 64, dtype=torch.bool)
    mask[0, 48:] = True  # image 0: bottom two patch rows are padding (16 patches)
    with torch.no_grad():
        enc = _encode(model, images, mask, pause=PausePlan(((1, 0.25),)))
    padding_patches = torch.arange(48, 64)
    assert torch.equal(enc.paused[0].positions[0], padding_patches)
    # The padding content does not reach the real patches. (Pixels 44..47 are bilinearly
    # upsampled from patch rows 5 and 6, and row 6 is padding, so they are left out.)
    noisy = images.clone()
    noisy[0, :, 48:] = 100.0
    with torch.no_grad():
        a = model(images, mask).heads["sem_logits"][0, :, :44]
        b = model(noisy, mask).heads["sem_logits"][0, :, :44]
    torch.testing.assert_close(a, b, rtol=0, atol=ATOL)


def test_decoder_masks_are_normalised_class_patch_products(model):
    dec = model.decoder
    torch.manual_seed(0)
    tokens = torch.randn(2, 12, 64)
    with torch.no_grad():
        got = dec(tokens, (3, 4))
        x = torch.cat([dec.proj_dec(tokens), dec.cls_emb.expand(2, -1, -1)], 1)
        for blk in dec.blocks:
            x = blk(x)
        x = dec.decoder_norm(x)
        pf, cf = x[:, :12] @ dec.proj_patch, x[:, 12:] @ dec.proj_classes
        cos = F.cosine_similarity(pf[:, :, None, :], cf[:, None, :, :], dim=-1)  # (2, 12, K)
        assert cos.abs().max() <= 1 + 1e-6
        want = dec.mask_norm(cos).transpose(1, 2).reshape(2, K, 3, 4)
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)


def test_criterion_pixel_and_aux_terms():
    model = _model().train()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    out = model(x, None, AdaptiveSettings(pause=PausePlan(((2, 0.5),))))
    sem = [torch.randint(0, K, (60, 64)), torch.randint(0, K, (64, 56))]
    sem[0][:5, :5] = 255
    crit = model.build_criterion(aux_weight=0.1)
    losses = crit(out, [{"semantic": s} for s in sem])
    padded = torch.full((2, 64, 64), 255)
    padded[0, :60] = sem[0]
    padded[1, :, :56] = sem[1]
    ce = F.cross_entropy(out.heads["sem_logits"], padded, ignore_index=255)
    torch.testing.assert_close(losses["loss_ce"], ce)
    # Patch (r, c) of an 8-pixel grid is labelled by pixel (8r + 4, 8c + 4).
    rec = out.aux_logits[0]
    centre = padded[:, 4::8, 4::8].flatten(1)
    labels = torch.gather(centre, 1, rec.token_idx)
    aux = F.cross_entropy(rec.logits.flatten(0, 1), labels.flatten(), ignore_index=255)
    torch.testing.assert_close(losses["loss_aux_decoder"], aux)
    torch.testing.assert_close(losses["loss"], ce + 0.1 * aux)
    with pytest.raises(ValueError, match="labels outside 0..4"):
        crit(out, [{"semantic": torch.full((64, 64), 7)}, {"semantic": sem[1]}])


def test_postprocess_semantic_argmax(model, images):
    with torch.no_grad():
        out = model(images[:2])
    maps = model.postprocess(out, [(64, 64), (40, 50)], output_sizes=[(64, 64), (80, 100)])
    assert maps[0].shape == (64, 64) and maps[1].shape == (80, 100)
    assert torch.equal(maps[0], out.heads["sem_logits"][0].argmax(0))
    with pytest.raises(ValueError, match="semantic"):
        model.postprocess(out, [(64, 64)] * 2, task="panoptic")


def test_window_starts():
    assert window_starts(64, 64, 32) == [0]
    assert window_starts(160, 64, 48) == [0, 48, 96]
    assert window_starts(150, 64, 48) == [0, 48, 86]
    with pytest.raises(ValueError, match="stride"):
        window_starts(100, 32, 40)


def test_sliding_window_equals_plain_forward_at_window_size(model, images):
    with torch.no_grad():
        plain = model(images, None, AdaptiveSettings(exits=torch.tensor([1, 2, 3, 4]))).heads["sem_logits"]
    slid = segmenter_inference_sliding(model, images, 64, 32, settings=AdaptiveSettings(exits=torch.tensor([1, 2, 3, 4])),
                                       batch_size=3)
    torch.testing.assert_close(slid, plain, rtol=0, atol=ATOL)


def test_sliding_window_tiles_and_averages(model):
    torch.manual_seed(0)
    big = torch.randn(1, 3, 64, 160)  # windows at x = 0, 48, 96 (stride 48)
    slid = segmenter_inference_sliding(model, big, 64, 48, batch_size=2)
    with torch.no_grad():
        parts = [model(big[..., x : x + 64]).heads["sem_logits"] for x in (0, 48, 96)]
    want = torch.zeros(1, K, 64, 160)
    count = torch.zeros(1, 1, 64, 160)
    for x, p in zip((0, 48, 96), parts):
        want[..., x : x + 64] += p
        count[..., x : x + 64] += 1
    torch.testing.assert_close(slid, want / count, rtol=0, atol=ATOL)
    # pixels 0..47 are seen by the first window only, 48..63 by two (the mean of both).
    torch.testing.assert_close(slid[..., :48], parts[0][..., :48], rtol=0, atol=ATOL)
    torch.testing.assert_close(slid[..., 48:64], (parts[0][..., 48:] + parts[1][..., :16]) / 2, rtol=0, atol=ATOL)


def test_sliding_window_pads_small_images(model):
    small = torch.randn(1, 3, 40, 64)
    slid = segmenter_inference_sliding(model, small, 64, 32)
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[:, 40:] = True
    padded = F.pad(small, (0, 0, 0, 24))
    with torch.no_grad():
        want = model(padded, mask).heads["sem_logits"][..., :40, :]
    assert slid.shape == (1, K, 40, 64)
    torch.testing.assert_close(slid, want, rtol=0, atol=ATOL)


@pytest.mark.parametrize("builder,depth,dim", [(segmenter_tiny, 6, 128), (segmenter_vit_ti, 12, 192), (segmenter_vit_s, 12, 384)])
def test_builders(builder, depth, dim):
    with torch.device("meta"):  # structure only
        m = builder()
    assert m.depth == depth and m.encoder.embed_dim == dim and m.decoder.d_model == dim
    assert len(m.decoder.blocks) == 2 and len(m.aux_decoders) == depth - 1
    assert m.exits == tuple(range(2, depth + 1))


def test_segmenter_tiny_forward_at_default_size():
    m = segmenter_tiny().eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 128, 128), None, AdaptiveSettings(pause=PausePlan.parse("3:0.4,5:0.3")))
    assert out.heads["sem_logits"].shape == (1, 8, 128, 128)
    assert [p.positions.shape[1] for p in out.paused] == [102, 46]  # floor(.4*256), floor(.3*154)


def test_paper_builder_loads_timm_vit_weights(tmp_path):
    """A 224-px timm ViT-Ti checkpoint goes into the 512-px Segmenter encoder (positions resampled)."""
    from safetensors.torch import save_file

    src = segmenter_vit_ti(num_classes=3, img_size=224).encoder
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    sd["head.weight"], sd["head.bias"] = torch.zeros(1000, 192), torch.zeros(1000)
    path = tmp_path / "vit_tiny_patch16_224.safetensors"
    save_file(sd, str(path))
    m = segmenter_vit_ti(num_classes=3, backbone_weights=str(path))
    assert m.encoder.pos_embed.shape == (1, 1 + 32 * 32, 192)
    torch.testing.assert_close(m.encoder.blocks[5].attn.qkv.weight, src.blocks[5].attn.qkv.weight, rtol=0, atol=0)
    torch.testing.assert_close(m.encoder.pos_embed[:, 0], src.pos_embed[:, 0], rtol=0, atol=0)
