"""PAUMER's early exit at test time (App. I, ``pause_output="aux"``) on Segmenter.

Oracles: an independent loop written here from the paper (ViT blocks over the active patches,
lowest-entropy pausing by hand, the auxiliary decoder's logits of each paused patch at its
layer, Segmenter's mask transformer written out on the active patches only, the grid
reassembled and upsampled); the plain model when nothing pauses; a hand count of the FLOPs
of what runs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import adaseg
from adaseg.eval.flops import FlopCounter
from adaseg.models.adaptive.settings import AdaptiveSettings


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = adaseg.create_model("segmenter_tiny", num_classes=5).eval()
    # random auxiliary decoders and class embeddings so labels differ between decoders
    with torch.no_grad():
        for dec in m.aux_decoders:
            dec.weight.normal_(0, 0.5)
            dec.bias.normal_(0, 0.5)
        m.decoder.cls_emb.normal_(0, 1.0)
    return m


def _images(b: int = 2, size: int = 48):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(3))


def _mask_transformer(dec, x: torch.Tensor) -> torch.Tensor:
    """Segmenter's decoder on (1, n, D) patches: joint layers with the class embeddings, then
    the normalised patch/class scalar products, LayerNorm over classes -> (1, n, K)."""
    n = x.shape[1]
    z = torch.cat([dec.proj_dec(x), dec.cls_emb], dim=1)
    for blk in dec.blocks:
        z = blk(z)
    z = dec.decoder_norm(z)
    patches = z[:, :n] @ dec.proj_patch
    classes = z[:, n:] @ dec.proj_classes
    patches = patches / patches.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    classes = classes / classes.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return dec.mask_norm(patches @ classes.transpose(1, 2))


def _oracle(model, image: torch.Tensor, stages: dict[int, float], exit: int):
    """One image (1, 3, H, W) -> ((K, h, w) patch logits, (h, w) source layer) by hand."""
    enc = model.encoder
    tokens, (h, w) = enc.embed(image)
    cls, patches = tokens[:, :1], tokens[0, 1:]
    n = patches.shape[0]
    active = torch.arange(n)  # positions of the active patches, in order
    feats = patches.clone()  # (N, D) every patch's latest features
    logits = torch.zeros(n, model.num_classes)
    source = torch.zeros(n, dtype=torch.long)
    for layer in range(1, exit + 1):
        y = enc.blocks[layer - 1](torch.cat([cls, feats[active][None]], dim=1))
        cls, feats[active] = y[:, :1], y[0, 1:]
        if layer in stages and layer < exit:
            aux = model.aux_decoders[layer - 1](feats[active])  # (n_active, K)
            p = aux.softmax(-1)
            entropy = -(p * p.log()).sum(-1)
            m = int(stages[layer] * len(active) + 1e-9)
            order = entropy.argsort()  # lowest entropy first: those pause
            paused, kept = order[:m], order[m:].sort().values
            logits[active[paused]] = aux[paused]
            source[active[paused]] = layer
            active = active[kept]
    logits[active] = _mask_transformer(model.decoder, enc.norm(feats[active])[None])[0]
    return logits.T.reshape(-1, h, w), source.view(h, w)


@pytest.mark.parametrize("pause,exits", [("2:0.4,4:0.3", [6, 6]), ("3:0.5", [2, 5])])
@torch.no_grad()
def test_early_exit_equals_an_independent_loop(model, pause, exits):
    images = _images()
    stages = dict(AdaptiveSettings(pause=pause).pause.stages)
    out = model(images, None, AdaptiveSettings(exits=torch.tensor(exits), pause=pause, pause_output="aux"))
    assert out.early_exit and out.exit_plan.tolist() == exits
    for i, k in enumerate(exits):
        grid, source = _oracle(model, images[i : i + 1], stages, k)
        assert torch.equal(out.heads["token_source"][i], source)
        want = F.interpolate(grid[None], size=images.shape[-2:], mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(out.heads["sem_logits"][i], want, rtol=1e-4, atol=1e-4)
    if exits == [6, 6]:  # the auxiliary decoders label differently from the main one here
        plain = model(images, None, AdaptiveSettings(pause=pause))
        assert not torch.allclose(plain.heads["sem_logits"], out.heads["sem_logits"])


@torch.no_grad()
def test_without_pausing_it_is_the_plain_model(model):
    images = _images()
    plain = model(images, None, AdaptiveSettings(exits=4))
    early = model(images, None, AdaptiveSettings(exits=4, pause="1:1e-6,3:1e-6", pause_output="aux"))
    assert [r.positions.shape[1] for r in early.paused] == [0, 0]
    assert torch.equal(early.heads["sem_logits"], plain.heads["sem_logits"])
    assert not bool(early.heads["token_source"].any())


def _mask_transformer_flops(n: int, k: int, d: int, layers: int) -> int:
    """FLOPs (2 x multiply-adds) of the mask transformer on n patches and k classes, width d,
    MLP 4d: proj_dec; per layer qkv, q.k and attn.v, proj, two MLP linears over n + k tokens;
    the patch and class projections; the patch x class products."""
    t = n + k
    per_layer = 2 * t * d * 3 * d + 2 * 2 * t * t * d + 2 * t * d * d + 2 * 2 * t * d * 4 * d
    return 2 * n * d * d + layers * per_layer + 2 * n * d * d + 2 * k * d * d + 2 * n * k * d


@torch.no_grad()
def test_gflops_are_what_runs(model):
    image = _images(1, 64)
    d, k, p = model.encoder.embed_dim, model.num_classes, model.patch_size
    n = (64 // p) ** 2
    counter = FlopCounter(scopes={"encoder": model.encoder_modules()})

    def count(settings):
        return counter.count(lambda: model(image, None, settings))[1]

    pause = "2:0.5,4:0.25"
    dec = count(AdaptiveSettings(pause=pause))
    aux = count(AdaptiveSettings(pause=pause, pause_output="aux"))
    paused = [n // 2, (n - n // 2) // 4]  # 32 after layer 2, 8 of the 32 left after layer 4
    active = n - sum(paused)
    embed = 2 * n * d * 3 * p * p  # the patch-embedding convolution (outside the encoder scope)
    # the entropy that selects the paused patches scores every active patch with the auxiliary
    # decoder's weights, called as an op, not as the module: outside the encoder scope too
    entropy = 2 * n * d * k + 2 * (n - paused[0]) * d * k
    assert dec.total - dec.scopes["encoder"] == embed + entropy + _mask_transformer_flops(n, k, d, 2)
    assert aux.total - aux.scopes["encoder"] == embed + entropy + _mask_transformer_flops(active, k, d, 2)
    # each paused patch's auxiliary decoder (an encoder module) runs once more to label it
    assert aux.scopes["encoder"] - dec.scopes["encoder"] == sum(2 * m * d * k for m in paused)


def test_settings_refuse_idle_or_undefined_early_exit():
    with pytest.raises(ValueError, match="needs a pause plan"):
        AdaptiveSettings(pause_output="aux")
    with pytest.raises(ValueError, match="record_exits"):
        AdaptiveSettings(pause="2:0.5", pause_output="aux", record_exits=(2, 3))
    with pytest.raises(ValueError, match="pause_output must be one of decoder, aux"):
        AdaptiveSettings(pause="2:0.5", pause_output="main")
    with pytest.raises(TypeError, match="pause_output"):
        AdaptiveSettings(pause="2:0.5", pause_output=1)


@pytest.mark.parametrize("name,options", [("m2f_tiny", {"thing_ids": (0, 1)}), ("setr_tiny", {})])
def test_models_without_an_early_exit_refuse_it_in_one_line(name, options):
    model = adaseg.create_model(name, num_classes=4, **options).eval()
    with pytest.raises(ValueError, match=r"has no early-exit output \(pause_output='aux'\)") as info:
        model(torch.randn(1, 3, 32, 32), None, AdaptiveSettings(pause="1:0.5", pause_output="aux"))
    assert "\n" not in str(info.value)
