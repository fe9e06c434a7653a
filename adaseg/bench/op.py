"""``adaseg bench op``: multi-scale deformable attention, reference vs compiled extension.

For each shape the forward (no autograd) and the forward+backward (the three input
gradients) are timed, median over ``repeats`` after one warm-up, and the peak extra memory
of each is measured:

* CPU: in a fresh process per variant, as the resident-set high-water mark above the
  resident set before the call (see :mod:`adaseg.bench.op_memory`, Linux only);
* CUDA: ``torch.cuda.max_memory_allocated`` above the memory allocated before the call.

Sampling locations follow a deformable encoder by default (each token queries around its
own position: MSDeformAttn's initial offsets plus noise); ``uniform`` spreads them over the
whole image, a worst case for memory locality.

Shapes: Mask2Former's encoder at 512x512 input (levels 64x64, 32x32, 16x16; Lq = S = 5376;
8 heads of 32 channels; 4 points; batch 2) and the CPU-default model ``m2f_tiny`` at
128x128 input (levels 16x16, 8x8, 4x4; 4 heads of 16 channels; 4 points; batch 8).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch

from adaseg.ops import _extension, reference
from adaseg.ops.msda_inputs import make_msda_inputs

VARIANTS = ("reference", "ext")
# Benchmark location patterns -> adaseg.ops.msda_inputs modes.
LOCATIONS = {"encoder": "encoder", "uniform": "inside"}
# Targets of issue 2 on a 2-core CPU: forward >= 3x, forward+backward >= 2x faster than
# the reference; peak extra memory <= half of the reference's.
TARGET_FWD, TARGET_FWD_BWD, TARGET_MEM = 3.0, 2.0, 0.5


@dataclass(frozen=True)
class Case:
    """One benchmark shape; queries = S (every token queries, as in the encoder)."""

    name: str
    batch: int
    heads: int
    head_dim: int
    shapes: tuple[tuple[int, int], ...]
    points: int

    @property
    def queries(self) -> int:
        return sum(h * w for h, w in self.shapes)

    def inputs(self, *, dtype: torch.dtype, device: str = "cpu", locations: str = "encoder"):
        """(value, spatial_shapes, level_start_index, sampling_locations, attention_weights).

        ``locations``: ``encoder`` (each token queries around its own position, as in a
        deformable encoder) or ``uniform`` (anywhere in [0, 1]: no locality at all).
        """
        return make_msda_inputs(
            batch=self.batch, queries=self.queries, heads=self.heads, head_dim=self.head_dim,
            shapes=list(self.shapes), points=self.points, dtype=dtype, device=device,
            locations=LOCATIONS[locations],
        )

    def describe(self) -> str:
        levels = ", ".join(f"{h}x{w}" for h, w in self.shapes)
        return (f"N={self.batch} Lq=S={self.queries} M={self.heads} D={self.head_dim} "
                f"L={len(self.shapes)} ({levels}) P={self.points}")


CASES = (
    Case("m2f-512", batch=2, heads=8, head_dim=32, shapes=((64, 64), (32, 32), (16, 16)), points=4),
    Case("m2f_tiny-128", batch=8, heads=4, head_dim=16, shapes=((16, 16), (8, 8), (4, 4)), points=4),
)


@dataclass
class Row:
    case: str
    variant: str
    fwd_ms: float
    fwd_bwd_ms: float
    fwd_mem_mib: float | None
    fwd_bwd_mem_mib: float | None


def op_for(variant: str):
    """The callable of one variant (the extension is loaded on demand)."""
    if variant == "reference":
        return reference.ms_deform_attn
    if variant == "ext":
        _extension.load()
        return torch.ops.adaseg.ms_deform_attn
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")


def _median_seconds(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up: thread pools, lazy initialisation, allocator
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_variant(case: Case, variant: str, *, dtype: torch.dtype, device: torch.device, repeats: int,
                 locations: str = "encoder") -> tuple[float, float]:
    """Median seconds of (forward without autograd, forward + backward)."""
    fn = op_for(variant)
    inputs = case.inputs(dtype=dtype, device=str(device), locations=locations)
    leaves = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    grad_out = torch.randn(case.batch, case.queries, case.heads * case.head_dim, device=device).to(dtype)

    def forward():
        with torch.no_grad():
            fn(*inputs)

    def forward_backward():
        for leaf in leaves:
            leaf.grad = None
        fn(*leaves).backward(grad_out)

    return _median_seconds(forward, repeats, device), _median_seconds(forward_backward, repeats, device)


def cpu_peak_memory(case: Case, variant: str, *, dtype: torch.dtype, locations: str = "encoder") -> tuple[float, float] | None:
    """Peak extra MiB of (forward, forward+backward) in a fresh process, or None off Linux."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    spec = {"case": asdict(case), "variant": variant, "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(), "locations": locations}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run(
        [sys.executable, "-m", "adaseg.bench.op_memory", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement of {variant} on {case.name} failed:\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["forward"] / 2**20, out["forward_backward"] / 2**20


def cuda_peak_memory(case: Case, variant: str, *, dtype: torch.dtype, device: torch.device,
                     locations: str = "encoder") -> tuple[float, float]:
    """Peak extra MiB allocated by (forward, forward+backward) on a CUDA device."""
    fn = op_for(variant)
    inputs = case.inputs(dtype=dtype, device=str(device), locations=locations)
    leaves = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    grad_out = torch.randn(case.batch, case.queries, case.heads * case.head_dim, device=device).to(dtype)
    figures = []
    for step in ("forward", "forward_backward"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        if step == "forward":
            with torch.no_grad():
                out = fn(*inputs)
        else:
            out = fn(*leaves)
            out.backward(grad_out)
        torch.cuda.synchronize(device)
        figures.append((torch.cuda.max_memory_allocated(device) - before) / 2**20)
        del out
    return figures[0], figures[1]


def run(*, cases=CASES, device: str = "cpu", dtype: torch.dtype = torch.float32, repeats: int = 3,
        memory: bool = True, locations: str = "encoder") -> tuple[dict, list[Row]]:
    """Time (and measure) every variant on every case. Returns (machine info, rows)."""
    dev = torch.device(device)
    reason = _extension.unsupported_reason(dev, dtype)
    if reason is not None:
        raise RuntimeError(f"cannot benchmark the extension: {reason}")
    info = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "repeats": repeats,
        "locations": locations,
        # Other processes on the machine slow both variants, rarely by the same factor.
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "memory_method": (
            "torch.cuda.max_memory_allocated above allocated before the call" if dev.type == "cuda"
            else "VmHWM - VmRSS in a fresh process per variant (clear_refs reset, MALLOC_MMAP_THRESHOLD_=65536)"
        ),
    }
    rows = []
    for case in cases:
        for variant in VARIANTS:
            fwd, fwd_bwd = time_variant(case, variant, dtype=dtype, device=dev, repeats=repeats, locations=locations)
            mem = None
            if memory:
                mem = (cuda_peak_memory(case, variant, dtype=dtype, device=dev, locations=locations) if dev.type == "cuda"
                       else cpu_peak_memory(case, variant, dtype=dtype, locations=locations))
            rows.append(Row(case.name, variant, fwd * 1e3, fwd_bwd * 1e3, mem[0] if mem else None, mem[1] if mem else None))
    return info, rows


def ratios(rows: list[Row]) -> dict[str, dict[str, float | None]]:
    """Per case: speed-ups reference/ext and memory ext/reference, from the same run."""
    out = {}
    by_case: dict[str, dict[str, Row]] = {}
    for row in rows:
        by_case.setdefault(row.case, {})[row.variant] = row
    for name, variants in by_case.items():
        ref, ext = variants["reference"], variants["ext"]

        def mem_ratio(a, b):
            return None if a is None or b is None or b <= 0 else a / b

        out[name] = {
            "fwd_speedup": ref.fwd_ms / ext.fwd_ms,
            "fwd_bwd_speedup": ref.fwd_bwd_ms / ext.fwd_bwd_ms,
            "fwd_mem_ratio": mem_ratio(ext.fwd_mem_mib, ref.fwd_mem_mib),
            "fwd_bwd_mem_ratio": mem_ratio(ext.fwd_bwd_mem_mib, ref.fwd_bwd_mem_mib),
        }
    return out


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def format_report(info: dict, rows: list[Row], cases=CASES) -> str:
    """A plain-text table plus the ratios and whether each target is met."""
    lines = [
        f"ms_deform_attn: reference (grid_sample) vs extension | {info['device']}, {info['threads']} threads, "
        f"torch {info['torch']}, {info['dtype']}, {info['locations']} locations, median of {info['repeats']}, "
        f"load average {_fmt(info['load_average_1min'], '.1f')} at start",
        f"peak extra memory: {info['memory_method']}",
    ]
    described = {c.name: c.describe() for c in cases}
    header = f"  {'variant':<10} {'fwd ms':>9} {'fwd+bwd ms':>11} {'fwd MiB':>9} {'fwd+bwd MiB':>12}"
    all_ratios = ratios(rows)
    for name, r in all_ratios.items():
        lines += ["", f"{name}: {described.get(name, '')}", header]
        for row in rows:
            if row.case == name:
                lines.append(
                    f"  {row.variant:<10} {row.fwd_ms:>9.2f} {row.fwd_bwd_ms:>11.2f} "
                    f"{_fmt(row.fwd_mem_mib, '9.1f'):>9} {_fmt(row.fwd_bwd_mem_mib, '12.1f'):>12}"
                )

        def verdict(value, target, higher_is_better):
            if value is None:
                return "n/a"
            ok = value >= target if higher_is_better else value <= target
            return "meets" if ok else "MISSES"

        lines.append(
            f"  speed-up fwd {r['fwd_speedup']:.2f}x ({verdict(r['fwd_speedup'], TARGET_FWD, True)} >= {TARGET_FWD:g}x), "
            f"fwd+bwd {r['fwd_bwd_speedup']:.2f}x ({verdict(r['fwd_bwd_speedup'], TARGET_FWD_BWD, True)} >= {TARGET_FWD_BWD:g}x)"
        )
        lines.append(
            f"  memory ext/reference fwd {_fmt(r['fwd_mem_ratio'], '.3f')} ({verdict(r['fwd_mem_ratio'], TARGET_MEM, False)} <= {TARGET_MEM:g}), "
            f"fwd+bwd {_fmt(r['fwd_bwd_mem_ratio'], '.3f')} ({verdict(r['fwd_bwd_mem_ratio'], TARGET_MEM, False)} <= {TARGET_MEM:g})"
        )
    return "\n".join(lines)
