"""``adaseg bench model``: does compute saved become time saved? Encoder and whole-model
images/s of one adaptive model, per arm, with each arm's FLOP-ideal speed-up (issue 23).

Arms (at the same batch, image size, dtype and device):

* ``none``: full depth, no pausing (the baseline of every ratio);
* ``reference``: the pause plan through the registered ops with the reference backend
  (``pausing.lean(False)``, ``ADASEG_PAUSE_BACKEND=reference``): what pausing cost before
  the lean path;
* ``lean``: the pause plan through the lean inference stage (:mod:`adaseg.ops.pause_stage`),
  eager, backend ``auto``;
* ``graph``: the lean path with the encoder as CUDA graphs
  (:class:`~adaseg.models.adaptive.cuda_graph.GraphedModel`; CUDA only);
* ``exits``: no pausing, per-image exits at a fixed mix (the images cycle through
  ``exit_mix``), eager; on CUDA also ``exits-graph`` (one graph per exit bucket).

Everything runs under ``torch.inference_mode()``. The arms are interleaved (none, reference,
lean, ...; none, reference, ...) so that load from other processes hits them alike; each
time is wall-clock with the device synchronised before and after (what images/s means).
``speedup`` = median time of ``none`` / median time of the arm; ``spread`` = the lowest and
highest per-round ratio (the arm against the ``none`` run of the same round);
``ideal`` = FLOPs of ``none`` / FLOPs of the arm (counted once, batch 1, by
:mod:`adaseg.eval.flops`; encoder scope for the encoder rows); ``realisation`` =
speedup / ideal.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch

from adaseg.choices import PAUSE_BACKEND_ENV

__all__ = ["ARMS", "ArmResult", "run", "format_report"]

ARMS = ("none", "reference", "lean", "graph", "exits", "exits-graph")
_GRAPH_ARMS = ("graph", "exits-graph")


@dataclass
class ArmResult:
    """One arm at one (scope, batch): median seconds per batch, images/s and the ratios."""

    scope: str  # "encoder" or "model"
    batch: int
    arm: str
    seconds: float
    images_per_s: float
    speedup: float
    spread: tuple[float, float]
    ideal: float
    realisation: float
    runs: int
    round_speedups: list[float]  # each round's none time / this arm's time (the spread's samples)

    def as_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def _backend(name: str | None) -> Iterator[None]:
    before = os.environ.get(PAUSE_BACKEND_ENV)
    if name is None:
        os.environ.pop(PAUSE_BACKEND_ENV, None)
    else:
        os.environ[PAUSE_BACKEND_ENV] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PAUSE_BACKEND_ENV, None)
        else:
            os.environ[PAUSE_BACKEND_ENV] = before


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def exit_mix_plan(mix: tuple[int, ...], batch: int) -> list[int]:
    """The images' exits: ``mix`` repeated over the batch (image i exits at mix[i % len(mix)])."""
    return [mix[i % len(mix)] for i in range(batch)]


def run(*, model_name: str, size: int, batches: tuple[int, ...], pause: str, exit_mix: tuple[int, ...] | None,
        arms: tuple[str, ...], repeats: int, warmup: int, device: str, dtype: str, threads: int | None,
        scopes: tuple[str, ...] = ("encoder", "model"), seed: int = 0, clock: str = "wall",
        log: Callable[[str], None] | None = None) -> tuple[dict, list[ArmResult]]:
    """Time every arm at every batch and scope; returns (info, rows). See the module docstring.

    ``clock``: ``"wall"`` (perf_counter, the device synchronised around each call) or, on a
    CPU, ``"cpu"``: the process's CPU time (``time.process_time``), which time-slicing by other
    processes on a shared machine does not inflate (cache and memory contention still do).
    """
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    if clock == "cpu" and torch.device(device).type != "cpu":
        raise ValueError("clock='cpu' measures CPU time: only for device='cpu'")
    from adaseg.eval.flops import count_flops
    from adaseg.models.adaptive.cuda_graph import GraphedModel, prep_rows
    from adaseg.models.adaptive.run import with_host_values
    from adaseg.models.adaptive.settings import AdaptiveSettings
    from adaseg.models.registry import create_model
    from adaseg.ops import pausing

    if threads is not None:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    on_cuda = dev.type == "cuda"
    arms = tuple(a for a in arms if on_cuda or a not in _GRAPH_ARMS)
    torch.manual_seed(seed)
    model = create_model(model_name).eval()
    pausing_arms = [a for a in arms if a in ("reference", "lean", "graph")]
    if pausing_arms:  # a model that cannot pause (rt) has no pause plan to time: refused before any work
        try:
            model.check_pausing()
        except ValueError as exc:
            raise ValueError(f"the pausing arms ({', '.join(pausing_arms)}) time a pause plan: {exc}; "
                             "time it with --arm exits") from None
    mix = exit_mix or tuple(sorted({max(1, model.depth // 3), max(1, 2 * model.depth // 3), model.depth}))
    if any(not 1 <= e <= model.depth for e in mix):
        raise ValueError(f"exit mix {list(mix)} must be layers in 1..{model.depth}")
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    model = model.to(device=dev, dtype=torch_dtype)
    plain = AdaptiveSettings()
    paused = AdaptiveSettings(pause=pause)
    info = {"model": model_name, "size": size, "batches": list(batches), "pause": pause, "exit_mix": list(mix),
            "device": str(dev), "dtype": dtype, "threads": torch.get_num_threads(), "repeats": repeats,
            "warmup": warmup, "arms": list(arms), "torch": torch.__version__, "clock": clock,
            "gpu": torch.cuda.get_device_name(dev) if on_cuda else None}
    rows: list[ArmResult] = []
    g = torch.Generator().manual_seed(seed + 1)
    for batch in batches:
        images = torch.randn(batch, 3, size, size, generator=g).to(device=dev, dtype=torch_dtype)
        mix_list = exit_mix_plan(mix, batch)
        with torch.inference_mode():
            prep = model.prepare(images, None)
            full_plan = with_host_values(torch.full((batch,), model.depth, dtype=torch.long, device=dev),
                                         [model.depth] * batch)
            mix_plan = with_host_values(torch.tensor(mix_list, device=dev), mix_list)
            graphed = GraphedModel(model, paused) if "graph" in arms else None
            graphed_plain = GraphedModel(model, plain) if "exits-graph" in arms else None

            def encode(settings, plan):
                return model.encode(prep, settings=settings, exit_plan=plan, keep_aux=False)

            def mix_graph():
                for e in sorted(set(mix_list)):
                    rows_e = torch.tensor([i for i, x in enumerate(mix_list) if x == e], device=dev)
                    graphed_plain.encoder(prep_rows(prep, rows_e, batch), e)

            enc = {
                "none": lambda: encode(plain, full_plan),
                "reference": lambda: encode(paused, full_plan),
                "lean": lambda: encode(paused, full_plan),
                "graph": lambda: graphed.encoder(prep, model.depth),
                "exits": lambda: encode(plain, mix_plan),
                "exits-graph": mix_graph,
            }
            whole = {
                "none": lambda: model(images, None, plain),
                "reference": lambda: model(images, None, paused),
                "lean": lambda: model(images, None, paused),
                "graph": lambda: graphed(images),
                "exits": lambda: model(images, None, AdaptiveSettings(exits=torch.tensor(mix_list, device=dev))),
                "exits-graph": None,  # the whole model with bucketed exits is the gate's path: GraphedModel(gate)
            }
            contexts = {"reference": lambda: _both(pausing.lean(False), _backend("reference"))}
            for scope in scopes:
                fns = enc if scope == "encoder" else whole
                scope_arms = [a for a in arms if fns[a] is not None]
                ideal = _ideals(model, images[:1], scope, scope_arms, pause, mix_list, count_flops)
                times = _interleaved({a: fns[a] for a in scope_arms}, contexts, repeats, warmup, dev,
                                     time.process_time if clock == "cpu" else time.perf_counter)
                base = times["none"] if "none" in times else None
                for arm in scope_arms:
                    t = statistics.median(times[arm])
                    per_round: list[float] = []
                    if base is not None:
                        per_round = [b / x for b, x in zip(base, times[arm])]
                        speedup = statistics.median(base) / t
                        spread = (min(per_round), max(per_round))
                    else:
                        speedup, spread = float("nan"), (float("nan"), float("nan"))
                    rows.append(ArmResult(scope=scope, batch=batch, arm=arm, seconds=t, images_per_s=batch / t,
                                          speedup=speedup, spread=spread, ideal=ideal[arm],
                                          realisation=speedup / ideal[arm], runs=len(times[arm]),
                                          round_speedups=per_round))
                    if log is not None:
                        log(format_row(rows[-1]))
    return info, rows


@contextlib.contextmanager
def _both(a, b) -> Iterator[None]:
    with a, b:
        yield


def _ideals(model, one_image, scope, arms, pause, mix_list, count_flops) -> dict[str, float]:
    """FLOP-ideal speed-up of each arm over ``none`` (counted on one image; the exit mix: the
    mean over the batch's exits)."""
    from adaseg.models.adaptive.settings import AdaptiveSettings

    scopes = {"encoder": model.encoder_modules()}

    def flops(settings) -> float:
        with torch.inference_mode():
            c = count_flops(lambda: model(one_image, None, settings), scopes=scopes, model=model)
        return float(c.scopes["encoder"] if scope == "encoder" else c.total)

    base = flops(AdaptiveSettings())
    paused = flops(AdaptiveSettings(pause=pause))
    mixed = base
    if any(a.startswith("exits") for a in arms):
        per_exit = {e: flops(AdaptiveSettings(exits=e)) for e in set(mix_list)}
        mixed = statistics.mean(per_exit[e] for e in mix_list)
    return {a: base / (base if a == "none" else mixed if a.startswith("exits") else paused) for a in arms}


def _interleaved(fns: dict[str, Callable[[], object]], contexts: dict, repeats: int, warmup: int,
                 dev: torch.device, clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call of each fn, the arms taking turns within each round."""
    times: dict[str, list[float]] = {a: [] for a in fns}
    for r in range(warmup + repeats):
        for arm, fn in fns.items():
            ctx = contexts.get(arm, contextlib.nullcontext)()
            with ctx:
                _sync(dev)
                start = clock()
                fn()
                _sync(dev)
                elapsed = clock() - start
            if r >= warmup:
                times[arm].append(elapsed)
    return times


def format_row(r: ArmResult) -> str:
    return (f"{r.scope:7s} b={r.batch:<3d} {r.arm:11s} {r.seconds * 1e3:9.2f} ms  {r.images_per_s:9.2f} img/s  "
            f"speed-up {r.speedup:5.3f}x (rounds {r.spread[0]:.3f}-{r.spread[1]:.3f})  ideal {r.ideal:5.3f}x  "
            f"realisation {r.realisation:5.3f}")


def format_report(info: dict, rows: list[ArmResult]) -> str:
    head = (f"adaseg bench model: {info['model']} {info['size']}x{info['size']}, pause {info['pause']}, "
            f"exit mix {info['exit_mix']}, {info['device']}{' (' + info['gpu'] + ')' if info['gpu'] else ''}, "
            f"{info['dtype']}, {info['threads']} threads, {info['clock']} clock, {info['repeats']} interleaved rounds "
            f"(+{info['warmup']} warm-up), inference_mode")
    lines = [head]
    if not info["device"].startswith("cuda"):
        lines.append("(no CUDA device: the graph arms are not run)")
    lines += [format_row(r) for r in rows]
    return "\n".join(lines)
