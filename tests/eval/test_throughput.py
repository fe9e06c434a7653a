"""Throughput logic: warm-up is not timed, images are counted as processed, CUDA is
synchronised around the clock. No timed assertions: a fake clock drives the checks."""

from __future__ import annotations

import pytest
import torch

from adaseg.eval.throughput import measure_throughput, synchronize


class FakeTime:
    """A clock that advances only when a step runs: warm-up steps take 100 s each, timed steps 2 s."""

    def __init__(self, warmup):
        self.t = 0.0
        self.warmup = warmup
        self.calls = []
        self.syncs = []

    def clock(self):
        return self.t

    def step(self, i, batch=4, last=None):
        self.calls.append(i)
        self.t += 100.0 if i < self.warmup else 2.0
        return last if (last is not None and i == self.warmup + 2) else batch

    def sync(self, device):
        self.syncs.append((len(self.calls), str(device)))


@pytest.mark.parametrize("warmup", [0, 3])
def test_warmup_excluded(warmup):
    ft = FakeTime(warmup)
    r = measure_throughput(ft.step, batch_size=4, device="cpu", warmup=warmup, iterations=3, clock=ft.clock, sync=ft.sync)
    assert ft.calls == list(range(warmup + 3))
    assert r.seconds == pytest.approx(6.0) and r.images == 12
    assert r.images_per_s == pytest.approx(2.0) and r.images_per_s > 0
    # synchronised after warm-up (before the clock starts) and after the last timed step
    assert ft.syncs == [(warmup, "cpu"), (warmup + 3, "cpu")]
    assert r.summary()["images_per_s"] == pytest.approx(2.0)


def test_partial_batch_counts_its_images():
    ft = FakeTime(1)
    r = measure_throughput(lambda i: ft.step(i, last=1), batch_size=4, device="cpu", warmup=1, iterations=3,
                           clock=ft.clock, sync=ft.sync)
    assert r.images == 4 + 4 + 1


@pytest.mark.parametrize("kwargs", [dict(warmup=-1), dict(iterations=0), dict(batch_size=0)])
def test_bad_settings(kwargs):
    base = dict(batch_size=1, device="cpu", warmup=0, iterations=1)
    base.update(kwargs)
    with pytest.raises(ValueError):
        measure_throughput(lambda i: 1, **base)


def test_step_must_report_images():
    with pytest.raises(ValueError, match="number of images"):
        measure_throughput(lambda i: None, batch_size=1, device="cpu", warmup=0, iterations=1)


def test_real_clock_on_a_real_model():
    model = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8)
    r = measure_throughput(lambda i: model(x).shape[0], batch_size=4, device="cpu", warmup=1, iterations=3)
    assert r.images == 12 and r.seconds > 0 and r.images_per_s > 0


def test_synchronize_cpu_is_a_noop():
    synchronize("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_synchronised():
    model = torch.nn.Linear(64, 64).cuda()
    x = torch.randn(32, 64, device="cuda")
    r = measure_throughput(lambda i: model(x).shape[0], batch_size=32, device="cuda", warmup=2, iterations=5)
    assert r.images == 160 and r.images_per_s > 0
