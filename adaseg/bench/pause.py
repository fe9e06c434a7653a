"""``adaseg bench pause``: PAUMER's pausing hot path, unfused PyTorch vs the Triton kernels.

For each shape (PAUMER's ViT-Ti/ViT-S at 512x512 with Cityscapes/ADE20K classes, and the
Mask2Former encoder at 512x512 input with COCO's 133 classes) one pause stage is timed op by
op, three ways: the reference ops (``adaseg.ops.reference``), plain PyTorch as PAUMER's
Appendix A writes it, and the Triton kernels:

* entropy: reference (float32 logits) / ``F.linear`` in the input dtype + log-softmax
  entropy / the fused kernel, whose achieved memory bandwidth (bytes it must move over its
  time) is reported as a fraction of the device's peak.
* keep: reference (stable sort, both index sets, gather) / ``torch.topk`` + gather / the
  rank-count + compaction kernels.
* assemble: reference (scatter into a copy) / in-place scatter of the kept tokens into the
  stage's own full tensor (cheapest in time, but the paper keeps one such tensor alive per
  stage) / the one-buffer write (paused rows + kept rows, each written once).

Without CUDA the Triton figures are not measured (the interpreter's speed means nothing);
PyTorch is timed on the CPU at batch <= ``cpu_batch`` so the command stays quick.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from adaseg.ops import reference
from adaseg.ops.reference import num_kept


@dataclass(frozen=True)
class Case:
    """One benchmark shape: tokens (batch, n, dim), an auxiliary decoder with ``classes``."""

    name: str
    batch: int
    n: int
    dim: int
    classes: int


CASES = (
    Case("vit-ti/cityscapes", 32, 1024, 192, 19),
    Case("vit-ti/ade20k", 32, 1024, 192, 150),
    Case("vit-s/cityscapes", 32, 1024, 384, 19),
    Case("vit-s/ade20k", 32, 1024, 384, 150),
    # Mask2Former's encoder at 512x512 input: levels at strides 8/16/32, width 256.
    Case("m2f/coco", 2, 64 * 64 + 32 * 32 + 16 * 16, 256, 133),
)

# Peak DRAM bandwidth (TB/s) by device-name fragment, most specific first.
PEAK_TBPS = (
    ("GH200", 4.0),  # before "H200", which it contains
    ("H200", 4.8),
    ("H100 NVL", 3.9),
    ("H100 PCIe", 2.0),
    ("H100", 3.35),  # "NVIDIA H100 80GB HBM3" is the SXM part
    ("A100-SXM4-80GB", 2.039),
    ("A100 80GB PCIe", 1.935),
    ("A100", 1.555),  # 40 GB parts, SXM4 and PCIe
    ("L40S", 0.864),
    ("L40", 0.864),
    ("A10G", 0.6),
    ("A10", 0.6),
    ("L4", 0.3),
    ("V100", 0.9),
    ("RTX 4090", 1.008),
    ("RTX 3090", 0.936),
    ("T4", 0.32),
)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def peak_bandwidth_tbps(device_name: str) -> float | None:
    """Peak memory bandwidth of a GPU from its name, or None when it is not in the table."""
    for fragment, tbps in PEAK_TBPS:
        if fragment.lower() in device_name.lower():
            return tbps
    return None


def _unfused_entropy(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """What one writes without a kernel: logits in the input dtype, entropy in float32."""
    logp = F.linear(x, w, b).float().log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def _paper_keep(x: torch.Tensor, h: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Appendix A's keep: ``entropy.topk`` then gather (indices sorted to keep token order)."""
    idx = torch.topk(h, n_keep, dim=1, sorted=False).indices.sort(dim=1).values
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(*idx.shape, x.shape[-1]))


def _time_ms(fn, device: torch.device, repeats: int) -> float:
    """Time of ``fn()`` in ms. GPU: median of triton.testing.do_bench (L2 flushed each run).

    CPU: the minimum over ``repeats`` runs (as ``timeit`` advises): on a shared CPU, other
    processes only ever add time, so the minimum is the op's own cost.
    """
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=max(5, repeats // 4), rep=max(20, repeats), return_mode="median"))
    fn()  # warm-up (allocator, first-call dispatch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times)


@dataclass
class Row:
    case: str
    op: str
    shape: str
    reference_ms: float
    plain_ms: float  # the plain-PyTorch alternative (see module docstring)
    triton_ms: float | None
    speedup: float | None  # fastest PyTorch time / Triton time
    bandwidth_gbps: float | None
    peak_fraction: float | None
    check: str

    def as_dict(self) -> dict:
        return asdict(self)


def run(
    *,
    cases: tuple[Case, ...] = CASES,
    dtype: str = "bf16",
    ratio: float = 0.4,
    repeats: int = 50,
    device: str | None = None,
    cpu_batch: int = 2,
    interpreted_triton: bool = False,
) -> tuple[dict, list[Row]]:
    """Time one pause stage per case. Returns (environment info, rows).

    ``interpreted_triton`` (tests only): on a CPU under TRITON_INTERPRET=1, run the Triton
    branch too, so the report's GPU code path is exercised; its times mean nothing and
    the report labels them as interpreter times.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = dev.type == "cuda"
    tdtype = _DTYPES[dtype]
    info = {"device": str(dev), "dtype": dtype, "ratio": ratio, "repeats": repeats}
    peak = None
    measure_triton = on_gpu and importlib.util.find_spec("triton") is not None
    if on_gpu:
        name = torch.cuda.get_device_name(dev)
        peak = peak_bandwidth_tbps(name)
        info.update(device_name=name, peak_tbps=peak, triton="measured" if measure_triton else "unmeasured (triton not installed)")
    else:
        info.update(device_name="cpu", peak_tbps=None, triton="unmeasured (no CUDA device)")
        if interpreted_triton:
            measure_triton = True
            info["triton"] = "interpreter on CPU (times meaningless; tests only)"
        if tdtype != torch.float32:
            tdtype = torch.float32  # CPU half matmuls are emulated; time the float32 path
            info["dtype"] = "fp32 (CPU)"
    threads = torch.get_num_threads()
    if not on_gpu:
        # One intra-op thread: on a shared CPU a multi-threaded op waits for its slowest
        # thread to be scheduled, which turns 0.2 ms into 100 ms at random.
        torch.set_num_threads(1)
        info["cpu_threads"] = 1
    try:
        rows = _run_cases(cases, dev, tdtype, on_gpu, measure_triton, peak, ratio, repeats, cpu_batch)
    finally:
        torch.set_num_threads(threads)
    return info, rows


def _run_cases(cases, dev, tdtype, on_gpu, measure_triton, peak, ratio, repeats, cpu_batch) -> list[Row]:
    rows: list[Row] = []
    gen = torch.Generator().manual_seed(0)
    for case in cases:
        b = case.batch if on_gpu else min(case.batch, cpu_batch)
        shape = f"B={b} N={case.n} D={case.dim} C={case.classes}"
        x = torch.randn(b, case.n, case.dim, generator=gen).to(dev, tdtype)
        w = (torch.randn(case.classes, case.dim, generator=gen) / case.dim**0.5).to(dev, tdtype)
        bias = torch.randn(case.classes, generator=gen).to(dev, tdtype)
        n_keep = num_kept(case.n, ratio)
        h = reference.aux_entropy(x, w, bias)
        keep_idx, pause_idx, kept = reference.topk_keep(x, h, n_keep)
        kept_after = kept * 1.5  # stands in for the layers run on the kept tokens

        stage_copy = x.clone()  # the paper keeps each stage's full tensor and writes into it
        kept_exp = keep_idx.unsqueeze(-1).expand_as(kept_after)
        ref_ms = {
            "entropy": _time_ms(lambda: reference.aux_entropy(x, w, bias), dev, repeats),
            "keep": _time_ms(lambda: reference.topk_keep(x, h, n_keep), dev, repeats),
            "assemble": _time_ms(lambda: reference.assemble(x, keep_idx, kept_after), dev, repeats),
        }
        # Plain-PyTorch alternatives, as PAUMER's Appendix A writes them.
        alt_ms = {
            "entropy": _time_ms(lambda: _unfused_entropy(x, w, bias), dev, repeats),
            "keep": _time_ms(lambda: _paper_keep(x, h, n_keep), dev, repeats),
            "assemble": _time_ms(lambda: stage_copy.scatter_(1, kept_exp, kept_after), dev, repeats),
        }
        tr_ms: dict[str, float] = {}
        checks = {op: "unmeasured" for op in ref_ms}
        if measure_triton:
            tr_ms, checks = _triton_times(x, w, bias, h, n_keep, keep_idx, pause_idx, kept_after, dev, repeats)
        moved = x.numel() * x.element_size() + w.numel() * w.element_size() + bias.numel() * bias.element_size() + h.numel() * 4
        for op in ("entropy", "keep", "assemble", "total"):
            if op == "total":
                r, a = sum(ref_ms.values()), sum(alt_ms.values())
                best = sum(min(ref_ms[o], alt_ms[o]) for o in ref_ms)
                t = sum(tr_ms.values()) if tr_ms else None
                check = ("ok" if all(c == "ok" for c in checks.values()) else "see ops") if tr_ms else "unmeasured"
            else:
                r, a = ref_ms[op], alt_ms[op]
                best = min(r, a)
                t = tr_ms.get(op)
                check = checks[op]
            bw = frac = None
            if op == "entropy" and t:
                bw = moved / (t * 1e-3) / 1e9
                frac = bw / (peak * 1e3) if peak else None
            rows.append(Row(case.name, op, shape, r, a, t, best / t if t else None, bw, frac, check))
    return rows


def _triton_times(x, w, bias, h, n_keep, keep_idx, pause_idx, kept_after, dev, repeats):
    """Triton timings for one stage plus agreement checks against the reference."""
    # The registered ops the dispatcher calls, so per-call dispatch overhead is included
    # (do_bench's events see it whenever the CPU, not the GPU, is the bottleneck).
    from adaseg.ops.triton import library as lib

    def assemble_one_buffer():
        buf = torch.empty_like(x)
        lib.WriteRows.apply(buf, x, pause_idx, pause_idx)  # paused rows, at pause time
        return lib.WriteRows.apply(buf, kept_after, None, keep_idx)  # kept rows, at the end

    times = {
        "entropy": _time_ms(lambda: lib.aux_entropy(x, w, bias), dev, repeats),
        "keep": _time_ms(lambda: lib.topk_keep(x, h, n_keep, "auto"), dev, repeats),
        "assemble": _time_ms(assemble_one_buffer, dev, repeats),
    }
    h_tr = lib.aux_entropy(x, w, bias)
    err = (h_tr - h).abs().max().item()
    kept_tr, keep_tr, pause_tr = lib.topk_keep(x, h, n_keep, "auto")
    ref_keep = reference.topk_keep(x, h, n_keep)
    same_keep = all(torch.equal(a, b) for a, b in zip((keep_tr, pause_tr, kept_tr), ref_keep))
    same_asm = torch.equal(assemble_one_buffer(), reference.assemble(x, keep_idx, kept_after))
    checks = {
        "entropy": "ok" if err < 1e-3 else f"max |dH| {err:.2e}",
        "keep": "ok" if same_keep else "MISMATCH",
        "assemble": "ok" if same_asm else "MISMATCH",
    }
    return times, checks


def format_report(info: dict, rows: list[Row]) -> str:
    """The table ``adaseg bench pause`` prints."""

    def ms(v):
        return "unmeasured" if v is None else f"{v:.3f}"

    lines = [
        f"device: {info['device_name']} ({info['device']}), dtype {info['dtype']}, pause ratio {info['ratio']}",
    ]
    if info["device"].startswith("cuda"):
        peak = info.get("peak_tbps")
        lines.append(f"peak bandwidth: {peak} TB/s" if peak else "peak bandwidth: unknown for this GPU (not in the table)")
        if info["triton"] != "measured":
            lines.append(f"Triton figures: {info['triton']}")
    else:
        lines.append("No CUDA device: the GPU figures (Triton time, speedup, bandwidth) are UNMEASURED; "
                     "PyTorch columns are single-thread CPU times (min of repeats) at a reduced batch.")
        if info["triton"] != "unmeasured (no CUDA device)":
            lines.append(f"Triton column: {info['triton']}")
    head = f"{'case':<18} {'op':<9} {'ref ms':>10} {'plain ms':>11} {'triton ms':>11} {'speedup':>8} {'GB/s':>8} {'%peak':>7}  check"
    lines += [head, "-" * len(head)]
    for r in rows:
        frac = "unknown" if (r.bandwidth_gbps is not None and r.peak_fraction is None) else (
            "" if r.peak_fraction is None else f"{100 * r.peak_fraction:.1f}")
        lines.append(
            f"{r.case:<18} {r.op:<9} {ms(r.reference_ms):>10} {ms(r.plain_ms):>11} "
            f"{ms(r.triton_ms):>11} {('' if r.speedup is None else f'{r.speedup:.2f}x'):>8} "
            f"{('' if r.bandwidth_gbps is None else f'{r.bandwidth_gbps:.0f}'):>8} {frac:>7}  {r.check}"
        )
    shapes = sorted({(r.case, r.shape) for r in rows})
    lines.append("shapes: " + "; ".join(f"{c}: {s}" for c, s in shapes))
    lines.append("ref = adaseg.ops.reference; plain = PyTorch as PAUMER's Appendix A writes it (entropy: F.linear "
                 "+ log-softmax; keep: torch.topk + gather; assemble: in-place scatter into the stage's own full "
                 "tensor, which the paper keeps alive per stage). speedup = faster of ref/plain over Triton, per op "
                 "(total: sum of the faster per op). GB/s, %peak: entropy kernel, bytes it must move (tokens, "
                 "decoder, entropies) over its time.")
    return "\n".join(lines)
