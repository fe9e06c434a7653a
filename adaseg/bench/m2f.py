"""``adaseg bench m2f``: adaseg's Mask2Former vs transformers' on the same weights.

A transformers ``Mask2FormerForUniversalSegmentation`` is built from a config (Swin-T
paper configuration by default: COCO's 133 classes, 100 queries, 6 encoder / 9 decoder
layers, d 256), saved with ``save_pretrained`` and imported with
:func:`adaseg.models.from_hf_mask2former`, so both models hold identical weights. On one
random image both run in eval mode under ``torch.inference_mode``; the runs are interleaved
(ours, theirs, ours, ...) so that load from other processes hits both alike, and the median
of each is reported with the ratio of the medians. Forward hooks time each model's
deformable encoder inside the same runs (HF samples with ``grid_sample`` per level; adaseg
calls its ``ms_deform_attn`` op). Then adaseg's encoder alone is timed at every exit 1..K
(backbone and input projection done once), plus the full forward at every exit.

transformers is only needed here and in tests; without it :class:`BenchUnavailable` says so.
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch

COCO_THINGS = tuple(range(80))


class BenchUnavailable(RuntimeError):
    """A requirement of the benchmark (transformers) is missing."""


@dataclass(frozen=True)
class Setting:
    """One benchmark configuration (HF config fields)."""

    name: str
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    hidden: int
    enc_layers: int
    dec_layers: int  # adaseg's count (HF's decoder_layers is one more)
    queries: int
    labels: int
    enc_ffn: int
    dec_ffn: int
    heads: int

    def describe(self) -> str:
        return (f"{self.name}: Swin embed {self.embed_dim} depths {list(self.depths)}, d {self.hidden}, "
                f"{self.enc_layers} enc / {self.dec_layers} dec layers, {self.queries} queries, {self.labels} classes")


SETTINGS = {
    "swin_t": Setting("swin_t", 96, (2, 2, 6, 2), (3, 6, 12, 24), 256, 6, 9, 100, 133, 1024, 2048, 8),
    # a CPU-friendly variant of the same architecture
    "small": Setting("small", 48, (2, 2, 2, 2), (3, 6, 12, 24), 128, 6, 6, 50, 133, 512, 1024, 8),
}


def require_transformers():
    """Import transformers, or raise :class:`BenchUnavailable` with the install hint."""
    if importlib.util.find_spec("transformers") is None:
        raise BenchUnavailable(
            "transformers is not installed; `pip install transformers` (adaseg's test extra) to compare against HF"
        )
    import transformers

    return transformers


def build_pair(setting: Setting, *, seed: int = 0):
    """(HF model, adaseg model) with identical weights, both in eval mode."""
    transformers = require_transformers()
    from adaseg.models.hf.importer import from_hf_mask2former

    torch.manual_seed(seed)
    swin = transformers.SwinConfig(
        embed_dim=setting.embed_dim, depths=list(setting.depths), num_heads=list(setting.num_heads), window_size=7,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    names = ["person"] + [f"thing{i}" for i in range(1, 79)] + ["toothbrush"] + [f"stuff{i}" for i in range(setting.labels - 80)]
    config = transformers.Mask2FormerConfig(
        backbone_config=swin, feature_size=setting.hidden, mask_feature_size=setting.hidden, hidden_dim=setting.hidden,
        encoder_feedforward_dim=setting.enc_ffn, dim_feedforward=setting.dec_ffn, encoder_layers=setting.enc_layers,
        decoder_layers=setting.dec_layers + 1, num_queries=setting.queries, num_attention_heads=setting.heads,
        id2label={i: n for i, n in enumerate(names[: setting.labels])},
    )
    hf = transformers.Mask2FormerForUniversalSegmentation(config).eval()
    with torch.no_grad():
        # HF's init zeroes the deformable offsets/weights; random ones make sampling realistic
        for p in hf.parameters():
            p.add_(0.02 * torch.randn_like(p))
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = from_hf_mask2former(tmp, thing_ids=COCO_THINGS if setting.labels == 133 else ())
    return hf, ours


def attention_mask_flips(ours_out: dict, hf_out) -> int:
    """Masked-attention pixels blocked in one model and open in the other (summed over layers).

    Each intermediate mask prediction, resized to the next layer's feature level, is
    thresholded at sigmoid 0.5; a logit within float error of 0 can land on either side in
    two correct implementations, and one such flip moves later outputs far more than
    rounding does. A non-zero count explains a max |diff| above ~1e-5.
    """
    import torch.nn.functional as F

    sizes = [f.shape[-2:] for f in hf_out.pixel_decoder_hidden_states]
    mine = [o["pred_masks"] for o in ours_out["aux_outputs"]]
    theirs = [o["masks_queries_logits"] for o in hf_out.auxiliary_logits]
    flips = 0
    for i, (m, t) in enumerate(zip(mine, theirs)):
        size = sizes[i % len(sizes)]
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
        flips += int(((m.sigmoid() < 0.5) != (t.sigmoid() < 0.5)).sum())
    return flips


class _HookTimer:
    """(wall, CPU) seconds spent inside ``module.forward`` (pre/post forward hooks)."""

    def __init__(self, module: torch.nn.Module):
        self.last = (0.0, 0.0)
        self._t0 = (0.0, 0.0)
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _pre(self, *_):
        self._t0 = (time.perf_counter(), time.process_time())

    def _post(self, *_):
        self.last = (time.perf_counter() - self._t0[0], time.process_time() - self._t0[1])


def _timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn()``; CPU time (all threads of this process) is what the
    work costs regardless of other processes competing for the cores."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _median(pairs: list[tuple[float, float]]) -> dict[str, float]:
    return {"wall_s": statistics.median(p[0] for p in pairs), "cpu_s": statistics.median(p[1] for p in pairs)}


def run(*, setting: str = "swin_t", size: int = 512, repeats: int = 5, warmup: int = 1, threads: int | None = None,
        exits: bool = True) -> dict:
    """Measure; returns a JSON-able dict of figures (seconds, wall and CPU)."""
    from adaseg.ops.ms_deform_attn import select_backend
    from adaseg.models.adaptive.settings import AdaptiveSettings

    if threads is not None:
        torch.set_num_threads(threads)
    s = SETTINGS[setting]
    hf, ours = build_pair(s)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    hf_enc = _HookTimer(hf.model.pixel_level_module.decoder.encoder)
    our_enc = _HookTimer(ours.pixel_decoder.transformer)
    t_ours, t_hf, e_ours, e_hf = [], [], [], []
    per_exit: dict[int, dict] = {}
    with torch.inference_mode():
        a = ours(x).heads
        b = hf(pixel_values=x, output_hidden_states=True, output_auxiliary_logits=True)
        diff_logits = float((a["pred_logits"] - b.class_queries_logits).abs().max())
        diff_masks = float((a["pred_masks"] - b.masks_queries_logits).abs().max())
        flips = attention_mask_flips(a, b)
        for _ in range(warmup):
            ours(x), hf(pixel_values=x)
        for _ in range(repeats):  # interleaved, so outside load hits both alike
            t_ours.append(_timed(lambda: ours(x)))
            e_ours.append(our_enc.last)
            t_hf.append(_timed(lambda: hf(pixel_values=x)))
            e_hf.append(hf_enc.last)
        if exits:
            feats = ours.backbone(x)
            prep = ours.pixel_decoder.prepare(feats, None)
            enc_t: dict[int, list] = {k: [] for k in range(1, ours.depth + 1)}
            full_t: dict[int, list] = {k: [] for k in range(1, ours.depth + 1)}
            for _ in range(repeats):
                for k in enc_t:  # round-robin over exits, for the same reason
                    plan = torch.tensor([k])
                    enc_t[k].append(_timed(lambda: ours.pixel_decoder.encode(
                        prep, settings=AdaptiveSettings(), exit_plan=plan, keep_aux=False)))
                    full_t[k].append(_timed(lambda: ours(x, None, AdaptiveSettings(exits=k))))
            per_exit = {k: {"encoder": _median(enc_t[k]), "forward": _median(full_t[k])} for k in enc_t}
    fo, fh, eo, eh = _median(t_ours), _median(t_hf), _median(e_ours), _median(e_hf)
    return {
        "setting": s.describe(),
        "size": size,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "msda_backend": select_backend(x),
        "max_abs_diff_class_logits": diff_logits,
        "max_abs_diff_mask_logits": diff_masks,
        "attention_mask_flips": flips,
        "ours_forward": fo,
        "hf_forward": fh,
        "speedup": {k: fh[k] / fo[k] for k in fo},
        "ours_encoder": eo,
        "hf_encoder": eh,
        "encoder_speedup": {k: eh[k] / eo[k] for k in eo},
        "runs": {"ours_forward": t_ours, "hf_forward": t_hf},
        "per_exit": per_exit,
    }


def format_report(r: dict) -> str:
    """The text ``adaseg bench m2f`` prints (wall and CPU time medians; ratios of medians)."""

    def both(v: dict) -> str:
        return f"{1000 * v['wall_s']:8.1f} ms wall {1000 * v['cpu_s']:8.1f} ms CPU"

    def ratio(v: dict) -> str:
        return f"{v['wall_s']:.2f}x wall {v['cpu_s']:.2f}x CPU"

    lines = [
        r["setting"],
        f"CPU, {r['size']}x{r['size']}, batch 1, {r['threads']} torch threads, median of {r['repeats']} interleaved runs; "
        f"adaseg ms_deform_attn backend: {r['msda_backend']}",
        f"same weights: max |diff| class logits {r['max_abs_diff_class_logits']:.2e}, "
        f"mask logits {r['max_abs_diff_mask_logits']:.2e}; masked-attention pixels decided differently: "
        f"{r['attention_mask_flips']} (a flip at the sigmoid-0.5 threshold, not a bug, is what moves outputs beyond ~1e-5)",
        f"forward  adaseg {both(r['ours_forward'])} | transformers {both(r['hf_forward'])} | speedup {ratio(r['speedup'])}",
        f"encoder  adaseg {both(r['ours_encoder'])} | transformers {both(r['hf_encoder'])} | speedup {ratio(r['encoder_speedup'])}",
        "         (encoder = the deformable encoder layers, timed inside the forward runs above)",
    ]
    if r["per_exit"]:
        lines.append("adaseg at each exit (encoder alone | full forward with that exit):")
        for k, v in sorted(r["per_exit"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"  exit {k}: encoder {both(v['encoder'])} | forward {both(v['forward'])}")
    return "\n".join(lines)
