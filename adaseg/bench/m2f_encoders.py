"""``adaseg bench m2f --encoder ...``: Mask2Former with each encoder kind, timed in one run.

The models differ only in the pixel decoder's encoder (``deform``, ``lite``, ``rt``; see
:mod:`adaseg.models.mask2former.encoder_kinds`): every other weight (backbone, input
projections, FPN path, transformer decoder) is copied from the first model, so the timings
and FLOPs compare the encoders and nothing else. Each model runs batch 1 in eval mode under
``torch.inference_mode``; runs are interleaved (model 1, 2, 3, 1, 2, 3, ...) so that load from
other processes hits all alike, and each figure is the median (wall and CPU seconds) with its
ratio to the first encoder's median. A forward hook times the encoder inside the same runs.
FLOPs are counted once per model on the same image (:mod:`adaseg.eval.flops`), reported as
the papers' GFLOPs (multiply-adds / 1e9) for the whole model and for the encoder.
"""

from __future__ import annotations

import torch

from adaseg.bench.m2f import _HookTimer, _median, _timed

# --setting -> the registered model of each kind; swin_t is the paper's Swin-T (COCO's 133
# classes, 100 queries, d 256), small the tiny CPU models (resnet_tiny, d 64)
MODELS = {
    "swin_t": {"deform": "m2f_swin_t", "lite": "m2f_lite_swin_t", "rt": "m2f_rt_swin_t"},
    "small": {"deform": "m2f_tiny", "lite": "m2f_lite_tiny", "rt": "m2f_rt_tiny"},
}


def build_models(setting: str, encoders: tuple[str, ...], *, seed: int = 0) -> dict[str, torch.nn.Module]:
    """{kind: model} in eval mode; every weight outside the encoder equals the first model's."""
    from adaseg.models.registry import create_model

    models = {}
    for kind in encoders:
        torch.manual_seed(seed)
        models[kind] = create_model(MODELS[setting][kind]).eval()
    first = models[encoders[0]]
    shared = {k: v for k, v in first.state_dict().items() if not k.startswith("pixel_decoder.transformer.")}
    for kind in encoders[1:]:
        own = models[kind].state_dict()
        models[kind].load_state_dict({**own, **{k: v for k, v in shared.items() if k in own}}, strict=True)
    return models


def run(*, setting: str = "swin_t", encoders: tuple[str, ...] = ("deform", "lite", "rt"), size: int = 512,
        repeats: int = 5, warmup: int = 1, threads: int | None = None) -> dict:
    """Measure; returns a JSON-able dict (seconds, GFLOPs, ratios to ``encoders[0]``)."""
    from adaseg.eval.flops import count_flops

    if threads is not None:
        torch.set_num_threads(threads)
    if not encoders or len(set(encoders)) != len(encoders):
        raise ValueError(f"encoders must be distinct kinds, got {encoders}")
    models = build_models(setting, encoders)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    timers = {k: _HookTimer(m.pixel_decoder.transformer) for k, m in models.items()}
    forward: dict[str, list] = {k: [] for k in models}
    encoder: dict[str, list] = {k: [] for k in models}
    flops = {}
    for kind, model in models.items():
        c = count_flops(model, x, scopes={"encoder": model.encoder_modules()})
        flops[kind] = {"total_gflops": c.total / 2e9, "encoder_gflops": c.scopes["encoder"] / 2e9}
    with torch.inference_mode():
        for _ in range(warmup):
            for model in models.values():
                model(x)
        for _ in range(repeats):
            for kind, model in models.items():
                forward[kind].append(_timed(lambda: model(x)))
                encoder[kind].append(timers[kind].last)
    base = encoders[0]
    out = {"setting": setting, "models": {k: MODELS[setting][k] for k in models}, "size": size, "repeats": repeats,
           "threads": torch.get_num_threads(), "baseline": base, "per_encoder": {}}
    fb, eb = _median(forward[base]), _median(encoder[base])
    for kind in models:
        f, e = _median(forward[kind]), _median(encoder[kind])
        out["per_encoder"][kind] = {
            "forward": f, "encoder": e, **flops[kind],
            "forward_ratio": {t: _ratio(f[t], fb[t]) for t in f}, "encoder_ratio": {t: _ratio(e[t], eb[t]) for t in e},
            "encoder_gflops_ratio": flops[kind]["encoder_gflops"] / flops[base]["encoder_gflops"],
        }
    return out


def _ratio(a: float, b: float) -> float:
    """a / b, NaN when the baseline measured 0 (a CPU clock too coarse for a tiny model)."""
    return a / b if b > 0 else float("nan")


def format_report(r: dict) -> str:
    """The text ``adaseg bench m2f --encoder ...`` prints."""

    def ms(v: dict) -> str:
        return f"{1000 * v['wall_s']:8.1f} ms wall {1000 * v['cpu_s']:8.1f} ms CPU"

    lines = [f"Mask2Former by encoder kind ({r['setting']}: {', '.join(f'{k}={n}' for k, n in r['models'].items())}); "
             f"CPU, {r['size']}x{r['size']}, batch 1, {r['threads']} torch threads, median of {r['repeats']} "
             f"interleaved runs; ratios to {r['baseline']}; GFLOPs = multiply-adds / 1e9 (the papers' convention)"]
    for kind, v in r["per_encoder"].items():
        fr, er = v["forward_ratio"], v["encoder_ratio"]
        lines.append(
            f"  {kind:6s} forward {ms(v['forward'])} ({fr['wall_s']:.2f}x wall {fr['cpu_s']:.2f}x CPU) | "
            f"encoder {ms(v['encoder'])} ({er['wall_s']:.2f}x wall {er['cpu_s']:.2f}x CPU) | "
            f"GFLOPs total {v['total_gflops']:.2f} encoder {v['encoder_gflops']:.2f} ({v['encoder_gflops_ratio']:.2f}x)")
    return "\n".join(lines)
