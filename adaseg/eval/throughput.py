"""Images per second: warm-up first, then timed iterations, synchronising CUDA around the clock.

The first iterations pay one-off costs (CUDA context and kernel selection, allocator
growth, Triton compilation, lazy imports), so ``warmup`` iterations run untimed. On CUDA,
kernels are asynchronous: the device is synchronised before the clock starts and again
before it stops, so the time covers the work itself, not only its launches.

The caller's ``step(i)`` runs iteration ``i`` (e.g. the model on batch ``i % len(batches)``)
and returns how many images it processed, so a last partial batch counts what it holds.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Throughput:
    """``images`` processed in ``seconds`` over ``iterations`` timed iterations (after
    ``warmup`` untimed ones) at ``batch_size``."""

    images: int
    seconds: float
    iterations: int
    warmup: int
    batch_size: int
    device: str

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> dict:
        out = asdict(self)
        out["images_per_s"] = self.images_per_s
        return out


def synchronize(device: torch.device | str) -> None:
    """Wait for queued CUDA work on ``device``; nothing to wait for on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_throughput(
    step: Callable[[int], int],
    *,
    batch_size: int,
    device: torch.device | str,
    warmup: int = 5,
    iterations: int = 20,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[torch.device | str], None] = synchronize,
) -> Throughput:
    """Time ``iterations`` calls of ``step`` after ``warmup`` untimed ones.

    Args:
        step: ``step(i) -> images processed``; called with i = 0 .. warmup+iterations-1.
        batch_size: recorded in the result (the caller's batches).
        device: the device the model runs on (CUDA is synchronised).
        warmup: untimed iterations first (>= 0).
        iterations: timed iterations (>= 1).
        clock, sync: injectable for tests.
    """
    if warmup < 0 or iterations < 1 or batch_size < 1:
        raise ValueError(f"need warmup >= 0, iterations >= 1, batch_size >= 1; got {warmup}, {iterations}, {batch_size}")
    with torch.inference_mode():
        for i in range(warmup):
            step(i)
        sync(device)
        start = clock()
        images = 0
        for i in range(warmup, warmup + iterations):
            n = step(i)
            if not isinstance(n, int) or n < 0:
                raise ValueError(f"step({i}) must return the number of images it processed, got {n!r}")
            images += n
        sync(device)
        seconds = clock() - start
    return Throughput(images=images, seconds=seconds, iterations=iterations, warmup=warmup,
                      batch_size=batch_size, device=str(device))
