"""``adaseg bench pause``: one PAUMER pause stage, timed as a unit, through the registered ops
and through the lean inference stage, at the paper's shapes (issue 23).

A stage takes b images of n active (b, n, D) tokens with their rows in the full map and a
(C, D) auxiliary decoder, and produces what the model needs next: the kept tokens
(b, n_keep, D), the kept and paused tokens' rows in the full map, and the paused tokens filed
into the full (b, N, D) buffer. Both arms produce exactly these outputs (checked equal to the
reference ops' on every case: like for like):

* ``ops``: the registered ops through :mod:`adaseg.ops.pausing`'s dispatch (``aux_entropy``,
  ``topk_keep``, two position gathers, the assembler's write), what the model ran before the
  lean path; backend ``auto`` (Triton on CUDA, the reference on CPU) or ``--backend``;
* ``lean``: :mod:`adaseg.ops.pause_stage` (scores, one sort for the choice, one for
  [keep | pause], one gather of positions and one of the kept tokens) and one
  ``gather`` + ``index_copy_`` filing the paused rows.

Times, all under ``torch.inference_mode()``:

* ``host us``: the CPU's time per stage with nothing waiting for the device (stages queued
  back to back; on a CPU this is the stage's whole time): what the host spends per stage;
* ``device us`` (CUDA only): the stage captured in a CUDA graph and replayed, timed with CUDA
  events: the device's own time, no host work;
* ``eager us`` (CUDA only): CUDA events around stages queued back to back: the larger of the
  two, what an eager model pays per stage.

Shapes (PAUMER and the project's Mask2Former): Segmenter ViT-Ti (D 192) / ViT-S (D 384) at
ADE20K 512x512 (N 1024, 150 classes) and Cityscapes 768x768 (N 2304, 19 classes), batch 32;
Mask2Former's encoder at COCO size, 1024x1024 (N = 128^2 + 64^2 + 32^2 = 21504, D 256,
133 classes), batch 2. Without CUDA the batch is capped (``cpu_batch``) and only host times
exist: the device columns say "unmeasured".
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from adaseg.choices import PAUSE_BACKEND_ENV
from adaseg.ops import pausing, reference
from adaseg.ops.pause_stage import stage_for
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
    Case("vit-ti/ade20k-512", 32, 1024, 192, 150),
    Case("vit-s/ade20k-512", 32, 1024, 384, 150),
    Case("vit-ti/cityscapes-768", 32, 2304, 192, 19),
    Case("vit-s/cityscapes-768", 32, 2304, 384, 19),
    Case("m2f/coco-1024", 2, 128 * 128 + 64 * 64 + 32 * 32, 256, 133),
)
ARMS = ("ops", "lean")

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


@dataclass
class Row:
    case: str
    arm: str
    shape: str
    host_us: float
    device_us: float | None
    eager_us: float | None
    floor_us: float | None  # bytes the stage must move / peak bandwidth
    backend: str  # what computed the entropy
    check: str

    def as_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def _backend(name: str | None):
    before = os.environ.get(PAUSE_BACKEND_ENV)
    if name is not None:
        os.environ[PAUSE_BACKEND_ENV] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PAUSE_BACKEND_ENV, None)
        else:
            os.environ[PAUSE_BACKEND_ENV] = before


def stage_ops(x, w, bias, positions, buf, n_keep):
    """The stage through the registered ops (the model's path before the lean one)."""
    with pausing.lean(False):
        h = pausing.aux_entropy(x, w, bias)
        keep_idx, pause_idx, kept = pausing.topk_keep(x, h, n_keep)
        kept_at, paused_at = torch.gather(positions, 1, keep_idx), torch.gather(positions, 1, pause_idx)
        pausing.write_rows(buf, x, pause_idx, paused_at)
    return kept, kept_at, paused_at


def stage_lean(x, w, bias, positions, buf, n_keep):
    """The stage through the lean inference path."""
    stage = stage_for(x, w, bias, n_keep)
    sel = stage.select(x, stage.scores(x, w, bias), positions, None)
    with pausing.lean(True):
        pausing.write_rows(buf, x, sel.paused_local, sel.paused_at)
    return sel.kept, sel.kept_at, sel.paused_at


_STAGES = {"ops": stage_ops, "lean": stage_lean}


def _host_us(fn, repeats: int, on_gpu: bool) -> float:
    """Median host microseconds per call; on a GPU, calls queued back to back (no sync inside)."""
    fn()
    if on_gpu:
        torch.cuda.synchronize()
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            samples.append((time.perf_counter() - start) / repeats * 1e6)
            torch.cuda.synchronize()
        return statistics.median(samples)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def _events_us(fn, repeats: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / repeats


def _graph_us(fn, repeats: int) -> float | str:
    """Device microseconds per stage: the stage captured once, replays timed by CUDA events."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    except RuntimeError as e:  # an op that cannot be captured: say so in the row
        return f"capture failed: {str(e).splitlines()[0][:80]}"
    graph.replay()
    return _events_us(graph.replay, repeats)


def run(*, cases: tuple[Case, ...] = CASES, arms: tuple[str, ...] = ARMS, dtype: str = "bf16", ratio: float = 0.4,
        repeats: int = 50, device: str | None = None, cpu_batch: int = 2, batch: int | None = None,
        backend: str | None = None) -> tuple[dict, list[Row]]:
    """Time one pause stage per case and arm. Returns (environment info, rows).

    ``batch``: every case at this batch instead of its own (e.g. 1 for latency);
    ``backend``: ``ADASEG_PAUSE_BACKEND`` for both arms (None: as set, i.e. auto).
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = dev.type == "cuda"
    tdtype = _DTYPES[dtype]
    info = {"device": str(dev), "dtype": dtype, "ratio": ratio, "repeats": repeats, "torch": torch.__version__,
            "backend": backend or os.environ.get(PAUSE_BACKEND_ENV) or "auto"}
    peak = None
    threads = torch.get_num_threads()
    if on_gpu:
        info["device_name"] = torch.cuda.get_device_name(dev)
        peak = peak_bandwidth_tbps(info["device_name"])
        info["peak_tbps"] = peak
    else:
        info.update(device_name="cpu", peak_tbps=None)
        if tdtype != torch.float32:
            tdtype = torch.float32  # CPU half matmuls are emulated; time the float32 path
            info["dtype"] = "fp32 (CPU)"
        # One intra-op thread: on a shared CPU a multi-threaded op waits for its slowest thread.
        torch.set_num_threads(1)
        info["cpu_threads"] = 1
    try:
        with torch.inference_mode(), _backend(backend):
            rows = _run_cases(cases, arms, dev, tdtype, on_gpu, peak, ratio, repeats, cpu_batch, batch)
    finally:
        torch.set_num_threads(threads)
    return info, rows


def _run_cases(cases, arms, dev, tdtype, on_gpu, peak, ratio, repeats, cpu_batch, batch) -> list[Row]:
    rows: list[Row] = []
    gen = torch.Generator().manual_seed(0)
    for case in cases:
        b = batch or case.batch
        if not on_gpu:
            b = min(b, cpu_batch)
        n, d, c = case.n, case.dim, case.classes
        shape = f"B={b} N={n} D={d} C={c}"
        x = torch.randn(b, n, d, generator=gen).to(dev, tdtype)
        w = (torch.randn(c, d, generator=gen) / d**0.5).to(dev, tdtype)
        bias = torch.randn(c, generator=gen).to(dev, tdtype)
        # a later stage: the n active tokens are an ascending subset of a map of N = 2n rows
        positions = torch.sort(torch.rand(b, 2 * n, generator=gen).argsort(1)[:, :n], 1).values.to(dev)
        n_keep = num_kept(n, ratio)
        # the oracle: the reference ops in float64 selection order on the same inputs
        h = reference.aux_entropy(x, w, bias)
        keep_idx, pause_idx, kept = reference.topk_keep(x, h, n_keep)
        want_buf = torch.zeros(b, 2 * n, d, device=dev, dtype=tdtype)
        want_buf.scatter_(1, torch.gather(positions, 1, pause_idx).unsqueeze(-1).expand(b, n - n_keep, d),
                          reference.gather_tokens(x, pause_idx))
        moved = (x.numel() * x.element_size() * 2 + b * n * (4 + 8 * 3)
                 + (n - n_keep) * b * d * x.element_size())  # x read twice, H, indices, paused rows written
        floor = moved / (peak * 1e12) * 1e6 if peak else None
        for arm in arms:
            buf = torch.zeros(b, 2 * n, d, device=dev, dtype=tdtype)
            fn = _STAGES[arm]
            got = fn(x, w, bias, positions, buf, n_keep)
            same_choice = torch.equal(got[1], torch.gather(positions, 1, keep_idx)) and torch.equal(
                got[2], torch.gather(positions, 1, pause_idx))
            if same_choice:
                check = "ok" if torch.equal(got[0], kept) and torch.equal(buf, want_buf) else "MISMATCH (rows)"
            else:  # float entropy differences may flip near-ties: count them
                differ = int((got[1] != torch.gather(positions, 1, keep_idx)).sum())
                check = f"selection differs from the reference at {differ} of {b * n_keep} kept (entropy rounding)"
            backend = stage_for(x, w, bias, n_keep).backend if arm == "lean" else pausing.select_backend(
                "aux_entropy", x, w, bias)
            call = lambda fn=fn, buf=buf: fn(x, w, bias, positions, buf, n_keep)  # noqa: E731
            host = _host_us(call, repeats, on_gpu)
            device_us = eager = None
            if on_gpu:
                eager = _events_us(call, repeats)
                device_us = _graph_us(call, repeats)
            rows.append(Row(case.name, arm, shape, host, device_us if not isinstance(device_us, str) else None,
                            eager, floor, backend, check if not isinstance(device_us, str) else f"{check}; {device_us}"))
    return rows


def format_report(info: dict, rows: list[Row]) -> str:
    """The table ``adaseg bench pause`` prints."""

    def us(v):
        return "unmeasured" if v is None else f"{v:.1f}"

    lines = [f"device: {info['device_name']} ({info['device']}), dtype {info['dtype']}, pause ratio {info['ratio']}, "
             f"backend {info['backend']}, inference_mode"]
    if info["device"].startswith("cuda"):
        peak = info.get("peak_tbps")
        lines.append(f"peak bandwidth: {peak} TB/s" if peak else "peak bandwidth: unknown for this GPU (not in the table)")
    else:
        lines.append("No CUDA device: device and eager times are UNMEASURED; host us is the single-thread CPU time "
                     "of the whole stage (median of repeats) at a reduced batch.")
    head = f"{'case':<22} {'arm':<5} {'host us':>10} {'device us':>10} {'eager us':>10} {'floor us':>9} {'entropy':>9}  check"
    lines += [head, "-" * len(head)]
    by_case: dict[str, dict[str, Row]] = {}
    for r in rows:
        by_case.setdefault(r.case, {})[r.arm] = r
        lines.append(f"{r.case:<22} {r.arm:<5} {us(r.host_us):>10} {us(r.device_us):>10} {us(r.eager_us):>10} "
                     f"{('' if r.floor_us is None else f'{r.floor_us:.1f}'):>9} {r.backend:>9}  {r.check}")
    ratios = []
    for case, arms in by_case.items():
        if "ops" in arms and "lean" in arms:
            o, n = arms["ops"], arms["lean"]
            part = f"{case}: host {o.host_us / n.host_us:.2f}x"
            if o.eager_us and n.eager_us:
                part += f", eager {o.eager_us / n.eager_us:.2f}x"
            if o.device_us and n.device_us:
                part += f", device {o.device_us / n.device_us:.2f}x"
            ratios.append(part)
    if ratios:
        lines.append("lean over ops (time of ops / time of lean): " + "; ".join(ratios))
    lines.append("shapes: " + "; ".join(sorted({f"{r.case}: {r.shape}" for r in rows})))
    lines.append("A stage: entropy, keep choice, kept tokens, kept/paused rows in the full map, paused rows filed "
                 "into the (b, 2n, D) buffer; check = equal to the reference ops' outputs. floor = bytes the "
                 "stage must move / peak bandwidth.")
    return "\n".join(lines)
