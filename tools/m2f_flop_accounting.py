"""Which accounting of "encoder GFLOPs" gives ECO-M2F Table 1's Lite-M2F / RT-M2F ratios?

Counts the parts of one image of each Swin-T paper model (m2f_swin_t, m2f_lite_swin_t,
m2f_rt_swin_t) with adaseg's FlopCounter -- backbone, encoder, stride-4 FPN path + mask
features, transformer decoder; the input projections are the rest of the total -- then
derives each candidate accounting by arithmetic (GMACs = adaseg's FLOPs / 2):

* the deformable layers' linears alone (what fvcore sees: it cannot count the sampling op):
  per query 256 x (192 offsets + 96 weights + 256 output + 2 x 1024 FFN), per value 256 x 256;
* RT's CSP fusions at expansion 0.5 (RT-DETR R18/R34) instead of 1.0 (R50): per output token
  2 x 1x1 (512 -> hidden) + 3 RepVGG (3x3 + 1x1 at hidden) + 1x1 (hidden -> 256) if narrower;
* Lite with Lite-DETR's 4 scales: a stride-64 level from a 3x3 stride-2 conv on the 768-channel
  stride-32 map, 4 levels in every layer's offsets and weights.

Usage: python tools/m2f_flop_accounting.py [--size 512]   (one forward per model, 1 thread)
The README's "Lite-M2F and RT-M2F" section quotes its output.
"""

from __future__ import annotations

import argparse

import torch

import adaseg
from adaseg.eval.flops import count_flops
from adaseg.models.adaptive.settings import AdaptiveSettings

C, FFN, HEADS, POINTS = 256, 1024, 8, 4  # the paper configurations' encoder
PAPER = {"lite": 79.78 / 121.69, "rt": 59.66 / 121.69}


def counted_parts(name: str, size: int) -> dict[str, float]:
    """GMACs of one size x size image of model ``name``, by part."""
    torch.manual_seed(0)
    model = adaseg.create_model(name).eval()
    pd = model.pixel_decoder
    scopes = {"backbone": model.backbone, "encoder": model.encoder_modules(),
              "fpn_s4": [pd.adapter_1, pd.layer_1, pd.mask_features], "decoder": model.predictor}
    with torch.inference_mode():
        count = count_flops(model, torch.randn(1, 3, size, size), None, AdaptiveSettings(exits=model.depth),
                            scopes=scopes)
    parts = {k: v / 2e9 for k, v in count.scopes.items()}
    parts["total"] = count.total / 2e9
    parts["input_proj"] = parts["total"] - sum(parts[k] for k in scopes)  # what no scope holds
    return parts


def deform_linears(n_queries: int, n_values: int, levels: int) -> float:
    """GMACs of one deformable layer's linears (no sampling)."""
    per_query = C * HEADS * levels * POINTS * 2 + C * HEADS * levels * POINTS + C * C + 2 * C * FFN
    return (n_queries * per_query + n_values * C * C) / 1e9


def csp_per_token(hidden: int) -> int:
    """MACs per output token of RT-DETR's CSPRepLayer (2C -> C, 3 RepVGG blocks)."""
    return 2 * (2 * C * hidden) + 3 * (hidden * hidden * 9 + hidden * hidden) + (0 if hidden == C else hidden * C)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    size = ap.parse_args().size
    torch.set_num_threads(1)
    parts = {kind: counted_parts(name, size) for kind, name in
             (("deform", "m2f_swin_t"), ("lite", "m2f_lite_swin_t"), ("rt", "m2f_rt_swin_t"))}
    for kind, p in parts.items():
        print(kind, {k: round(v, 4) for k, v in p.items()}, "GMACs")
    tok = {32: (size // 32) ** 2, 16: (size // 16) ** 2, 8: (size // 8) ** 2}
    n_all, n_high = sum(tok.values()), tok[32] + tok[16]
    enc = {k: p["encoder"] for k, p in parts.items()}
    rest = parts["deform"]["input_proj"] + parts["deform"]["fpn_s4"]  # the same in every kind
    linears = {"deform": 6 * deform_linears(n_all, n_all, 3),
               "lite": 5 * deform_linears(n_high, n_all, 3) + deform_linears(n_all, n_all, 3), "rt": enc["rt"]}
    csp_tokens = 2 * tok[16] + tok[8] + tok[32]  # fpn: 16, 8; pan: 16, 32
    rt_half = enc["rt"] + csp_tokens * (csp_per_token(C // 2) - csp_per_token(C)) / 1e9
    t64 = (size // 64) ** 2
    sampling = enc["lite"] - linears["lite"]
    lite4 = (5 * deform_linears(n_high + t64, n_all + t64, 4) + deform_linears(n_all + t64, n_all + t64, 4)
             + t64 * 768 * C * 9 / 1e9 + sampling)
    pd = {k: v + rest for k, v in enc.items()}
    rows = [
        ("paper, Table 1", PAPER["lite"], PAPER["rt"]),
        ("encoder (adaseg's scope)", enc["lite"] / enc["deform"], enc["rt"] / enc["deform"]),
        ("encoder, linears only (fvcore)", linears["lite"] / linears["deform"], linears["rt"] / linears["deform"]),
        ("encoder + input projections", (enc["lite"] + parts["deform"]["input_proj"]) / (enc["deform"] + parts["deform"]["input_proj"]),
         (enc["rt"] + parts["deform"]["input_proj"]) / (enc["deform"] + parts["deform"]["input_proj"])),
        ("whole pixel decoder", pd["lite"] / pd["deform"], pd["rt"] / pd["deform"]),
        ("whole pixel decoder, linears only", (linears["lite"] + rest) / (linears["deform"] + rest),
         (linears["rt"] + rest) / (linears["deform"] + rest)),
        ("encoder, Lite 4 scales / RT expansion 0.5", lite4 / enc["deform"], rt_half / enc["deform"]),
        ("whole pixel decoder, Lite 4 scales / RT expansion 0.5", (lite4 + rest) / pd["deform"],
         (rt_half + rest) / pd["deform"]),
    ]
    total = parts["deform"]["total"]
    print(f"M2F: pixel decoder {pd['deform'] / total:.1%} of the total, encoder {enc['deform'] / total:.1%} "
          f"(paper 121.69 / 235.57 = {121.69 / 235.57:.1%}); totals vs M2F: lite {parts['lite']['total'] / total:.3f} "
          f"rt {parts['rt']['total'] / total:.3f}, rt at expansion 0.5 {(parts['rt']['total'] - enc['rt'] + rt_half) / total:.3f} "
          f"(paper {188.00 / 235.57:.3f}, {158.30 / 235.57:.3f})")
    print("| accounting | Lite / M2F | RT / M2F |\n|---|---|---|")
    for label, lite, rt in rows:
        print(f"| {label} | {lite:.3f} | {rt:.3f} |")


if __name__ == "__main__":
    main()
