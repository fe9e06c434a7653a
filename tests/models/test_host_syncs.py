"""Device-to-host reads in an adaptive forward pass: a constant per forward, none per layer.

On a GPU every read of a device value by the host (``.item()``, ``bool(t)``, ``int(t)``,
``.tolist()``, ``.cpu()``) waits for the device to finish everything queued so far; one per
layer makes the GPU idle through every layer's host time (issue 23). Oracle: the reads are
counted by wrapping those Tensor methods during a forward, and the count must not grow with
the number of layers run (the same model at a shallow and at the full exit, a pause plan at
every stage it can have) and must stay within the reads named below. On a GPU the same
forward runs under ``torch.cuda.set_sync_debug_mode("error")`` after the counted reads.

The reads a forward makes, none of them in the layer loop:

* ``normalise_exits`` checks the plan's range: ``int(plan.min())`` and ``int(plan.max())``
  (2, in adaseg/models/adaptive/plan.py);
* the run reads the plan once (``AdaptiveRun``: 1 ``tolist``);
* Segmenter's ``token_validity`` asks whether any patch is padding (``bool(valid.all())``,
  1, only with a padding mask); Mask2Former's pixel decoder reads its level shapes
  (``spatial_shapes.tolist()`` and ``level_start_index.tolist()``, 2, after the encoder).
"""

from __future__ import annotations

import contextlib
import os
import traceback

import pytest
import torch

import adaseg
from adaseg.models.adaptive.gate import Gate
from adaseg.models.adaptive.settings import AdaptiveSettings

_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy")


@contextlib.contextmanager
def counted_reads():
    """Count calls of the Tensor methods that read a value to the host; yields the list of
    (method, caller "file:line") pairs, filled while the block runs."""
    seen: list[tuple[str, str]] = []
    originals = {name: getattr(torch.Tensor, name) for name in _READS}

    def wrap(name, fn):
        def counted(self, *args, **kwargs):
            frame = traceback.extract_stack(limit=2)[0]
            seen.append((name, f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"))
            return fn(self, *args, **kwargs)
        return counted

    for name, fn in originals.items():
        setattr(torch.Tensor, name, wrap(name, fn))
    try:
        yield seen
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


def _model(name: str):
    torch.manual_seed(0)
    options = {"num_classes": 4}
    if name.startswith("m2f"):
        options["thing_ids"] = (0, 1)
    return adaseg.create_model(name, **options).eval()


def _reads(model, images, settings, padding=None) -> list[tuple[str, str]]:
    with torch.inference_mode(), counted_reads() as seen:
        model(images, padding, settings)
    return seen


# (model, reads per forward without padding); see the module docstring
@pytest.mark.parametrize("name,expected", [("segmenter_tiny", 3), ("m2f_tiny", 5)])
def test_reads_per_forward_do_not_grow_with_layers(name, expected):
    model = _model(name)
    k = model.depth
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    pause = ",".join(f"{layer}:0.3" for layer in range(1, k))  # a pause stage after every layer but the last
    shallow = _reads(model, images, AdaptiveSettings(exits=2, pause="1:0.3"))
    deep = _reads(model, images, AdaptiveSettings(exits=k, pause=pause))
    mixed = _reads(model, images, AdaptiveSettings(exits=torch.tensor([2, k, 3]), pause=pause))
    assert len(shallow) == len(deep) == len(mixed) == expected, (shallow, deep, mixed)
    assert not any(site.startswith(("run.py", "pause_selection.py", "pausing.py")) and name != "tolist"
                   for name, site in deep), deep


def test_gate_exits_read_the_plan_once():
    model = _model("segmenter_tiny")
    gate = Gate(in_channels=model.gate_channels, exits=model.exits)
    torch.manual_seed(3)
    torch.nn.init.normal_(gate.linear.weight, std=5.0)  # spread the exits over the batch
    model.set_gate(gate)
    images = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        exits = model(images, None, AdaptiveSettings(exits="gate")).exit_plan.tolist()
    assert len(set(exits)) > 1, exits  # the case is one of mixed exits
    seen = _reads(model, images, AdaptiveSettings(exits="gate", pause="1:0.4,2:0.3"))
    assert len(seen) == 3, seen
    assert sum(site.startswith("run.py") for _, site in seen) == 1, seen


def test_exit2_gate_reads_its_decision_once_after_layer_2():
    """An exit-2 gate (decided inside the loop, after layer 2) reads the decided exits once
    (``run.py``'s one ``tolist``) and nothing per layer; no plan is normalised before layer 1."""
    model = _model("m2f_tiny")
    gate = Gate(in_channels=model.exit2_channels, exits=model.exits, features="exit2")
    model.set_gate(gate)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    seen = _reads(model, images, AdaptiveSettings(exits="gate", pause="2:0.3,3:0.3"))
    assert sum(site.startswith("run.py") for _, site in seen) == 1, seen
    assert len(seen) == 3, seen  # the decision's read + the pixel decoder's 2 after the encoder


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (set_sync_debug_mode counts "
                    "real device syncs; the CPU tests above count the reads that cause them)")
@pytest.mark.parametrize("name", ["segmenter_tiny", "m2f_tiny"])
def test_no_device_sync_inside_the_layer_loop_on_cuda(name, monkeypatch):
    """The encoder loop alone (prepare and the plan's reads done before, the stages built by a
    first forward) runs with syncs as errors."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1 (tests/conftest.py) cannot run CUDA tensors: run with TRITON_INTERPRET=0")
    model = _model(name).cuda()
    images = torch.randn(3, 3, 64, 64, device="cuda")
    settings = AdaptiveSettings(exits=torch.tensor([2, model.depth, 3]), pause="1:0.4,2:0.3")
    from adaseg.models.adaptive import run as adaptive_run

    original_init = adaptive_run.AdaptiveRun.__init__

    def init_then_error_on_sync(self, *args, **kwargs):
        original_init(self, *args, **kwargs)  # the plan's one read happens here
        torch.cuda.set_sync_debug_mode("error")

    with torch.inference_mode():
        prep = model.prepare(images, None)
        plan = settings.exit_plan(batch_size=3, depth=model.depth, device=images.device)
        # a first forward builds the lean stages (their backend is timed once per shape, which
        # synchronises) and compiles the kernels; the checked one runs on what they left
        model.encode(prep, settings=settings, exit_plan=plan, keep_aux=False)
        torch.cuda.synchronize()
        monkeypatch.setattr(adaptive_run.AdaptiveRun, "__init__", init_then_error_on_sync)
        monkeypatch.setattr(adaptive_run.AdaptiveRun, "finish", _finish_then_allow(adaptive_run.AdaptiveRun.finish))
        try:
            model.encode(prep, settings=settings, exit_plan=plan, keep_aux=False)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def _finish_then_allow(finish):
    def wrapped(self):
        torch.cuda.set_sync_debug_mode("default")
        return finish(self)
    return wrapped
