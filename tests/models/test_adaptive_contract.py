"""The adaptive-model contract, checked on every model in the registry (adaseg.list_models()).

Oracles: the same model run image by image at a fixed exit (mixed exits), run once per exit
(recorded exits), run without a pause plan (ratio -> 0), the token map the run held at the
pause layer (paused tokens come back bit for bit), and the padding mask itself (padding
tokens pause before any real token). A model that cannot pause (``pause_refusal`` set, e.g.
RT-M2F) must instead refuse every pause plan in one line naming the model and its reason,
before any work, and passes the tests that need no pausing. A model added to the registry is
covered here with no new test code; its own behaviour (attention over paused tokens, padding
invariance of its backbone, ...) is tested in its own module.
"""

from __future__ import annotations

import inspect
import os

import pytest
import torch

import adaseg
from adaseg.models.adaptive import run as adaptive_run
from adaseg.models.adaptive.protocol import AdaptiveModel
from adaseg.models.adaptive.output import AdaptiveOutput
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.registry import model_options

# the others run at 32 px, 2 images. m2f_rt_tiny runs at 64 px: at 32 px its stride-32 map is one
# token, whose GroupNorm (d 64 in 32 groups: 2 values a group) amplifies the ~1e-6 rounding
# difference of a batch of 2 vs 1 to ~1e-3 by layer 5 (mixed exits without pausing).
SMALL = {"m2f_tiny", "segmenter_tiny", "segmenter_vit_ti", "detr_tiny", "m2f_rt_tiny"}


# Every model on the CPU, and on a GPU where one is present: there the pausing runs through
# the compiled Triton kernels (selection, in-place write-back) and deformable attention
# through the CUDA extension, which only a GPU can check.
_NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
_CASES = [pytest.param((name, "cpu"), id=name) for name in adaseg.list_models()] + [
    pytest.param((name, "cuda"), id=f"{name}-cuda", marks=_NO_GPU) for name in adaseg.list_models()]


@pytest.fixture(scope="module", params=_CASES)
def case(request):
    name, device = request.param
    if device == "cuda":
        if os.environ.get("TRITON_INTERPRET") == "1":
            pytest.skip("the Triton interpreter (TRITON_INTERPRET=1, set by tests/conftest.py) cannot run on "
                        "CUDA tensors: run with TRITON_INTERPRET=0, as tools/gpu_check.sh does")
        # TF32 convolutions/matmuls differ with the batch size by ~1e-3, far above the 1e-4 here
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    options = {"num_classes": 4}
    if "thing_ids" in model_options(name):
        options["thing_ids"] = (0, 1)
    model = adaseg.create_model(name, **options).eval()
    b, size = (3, 64) if name in SMALL else (2, 32)
    # A single-scale encoder at stride 32 (DETR) holds one token at 32 px: grow the input until
    # the encoder's map holds at least 4 tokens, so pausing has tokens to pause.
    with torch.no_grad():
        while int(model.prepare(torch.zeros(1, 3, size, size), None).token_shapes.prod(1).sum()) < 4:
            size *= 2
    images = torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(1))
    return name, model.to(device), images.to(device)


def _heads(out: AdaptiveOutput) -> list[torch.Tensor]:
    """Every tensor of the decoder heads, flattened in a fixed order."""
    found = []

    def walk(x):
        if isinstance(x, torch.Tensor):
            found.append(x)
        elif isinstance(x, dict):
            for k in sorted(x):
                walk(x[k])
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(out.heads)
    return found


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


class _Capture:
    """Records every AdaptiveRun's padding and result (the encoder's token maps)."""

    def __init__(self, monkeypatch):
        self.runs: list[tuple[torch.Tensor | None, adaptive_run.RunResult]] = []
        init, finish = adaptive_run.AdaptiveRun.__init__, adaptive_run.AdaptiveRun.finish
        capture = self

        def patched_init(run, tokens, **kw):
            init(run, tokens, **kw)
            run._test_padding = kw["padding"]

        def patched_finish(run):
            result = finish(run)
            capture.runs.append((run._test_padding, result))
            return result

        monkeypatch.setattr(adaptive_run.AdaptiveRun, "__init__", patched_init)
        monkeypatch.setattr(adaptive_run.AdaptiveRun, "finish", patched_finish)


def _pauses(model, images, settings: AdaptiveSettings, padding_mask=None) -> bool:
    """True when ``model`` can pause tokens (``pause_refusal`` is None). Otherwise its forward
    with the pause plan of ``settings`` must raise ValueError in one line naming the model and
    its reason, before any work (``prepare`` is never called); then False."""
    refusal = model.pause_refusal
    if refusal is None:
        return True
    assert isinstance(refusal, str) and refusal and "\n" not in refusal

    def no_work(*args, **kwargs):
        raise AssertionError("a refused pause plan must be refused before the model prepares anything")

    model.__dict__["prepare"] = no_work  # instance attribute: shadows the method for this call only
    try:
        with pytest.raises(ValueError) as info:
            model(images, padding_mask, settings)
    finally:
        del model.__dict__["prepare"]
    assert str(info.value) == f"{type(model).__name__} cannot pause tokens: {refusal}"
    return False


def test_model_follows_the_protocol(case):
    name, model, _ = case
    assert isinstance(model, AdaptiveModel), name
    # Python >= 3.12 checks a runtime protocol with inspect.getattr_static (no __getattr__, so
    # no nn.Module submodule attributes): every member must be found that way too.
    members = set(AdaptiveModel.__annotations__) | {k for k, v in vars(AdaptiveModel).items()
                                                    if callable(v) and not k.startswith("_")}
    assert {"backbone", "depth", "set_gate", "encoder_modules"} <= members
    for attr in sorted(members):
        inspect.getattr_static(model, attr)
    assert model.task in ("panoptic", "semantic", "detection")  # detection: boxes (DETR)
    assert list(model.exits) == sorted(set(model.exits)) and model.exits[-1] <= model.depth
    assert all(isinstance(m, torch.nn.Module) for m in model.encoder_modules())
    assert isinstance(model.backbone, torch.nn.Module)


@torch.no_grad()
def test_mixed_exits_equal_per_image_runs(case):
    _, model, images = case
    b = images.shape[0]
    plan = torch.tensor([2, model.depth, 3][:b], device=images.device)
    pause = AdaptiveSettings(pause="1:0.3").pause
    if not _pauses(model, images, AdaptiveSettings(exits=plan, pause=pause)):
        pause = None  # a model that cannot pause: mixed exits alone
    out = model(images, None, AdaptiveSettings(exits=plan, pause=pause))
    assert out.exit_plan.tolist() == plan.tolist() and out.exits == {}
    for i, k in enumerate(plan.tolist()):
        alone = model(images[i : i + 1], None, AdaptiveSettings(exits=k, pause=pause))
        for got, want in zip(_heads(out), _heads(alone)):
            _close(got[i], want[0])
    if pause is not None:  # images leave as they exit: the pause stage after layer 1 saw every image
        assert out.paused[0].rows.tolist() == list(range(b))


@pytest.mark.parametrize("pause", [None, "2:0.4"])
@torch.no_grad()
def test_recorded_exits_equal_fixed_exit_runs(case, pause):
    name, model, images = case
    if pause is not None and not _pauses(model, images, AdaptiveSettings(record_exits=model.exits, pause=pause)):
        return
    out = model(images, None, AdaptiveSettings(record_exits=model.exits, pause=pause))
    assert sorted(out.exits) == list(model.exits) and out.heads is None and out.exit_plan is None
    exits = model.exits if name in SMALL else (model.exits[0], model.exits[len(model.exits) // 2], model.exits[-1])
    for k in exits:
        one = model(images, None, AdaptiveSettings(exits=k, pause=pause))
        view = out.at_exit(k)
        assert view.exit_plan.tolist() == [k] * images.shape[0]
        for got, want in zip(_heads(view), _heads(one)):
            _close(got, want)


@torch.no_grad()
def test_pause_ratio_towards_zero_equals_no_pausing(case):
    _, model, images = case
    if not _pauses(model, images, AdaptiveSettings(exits=model.depth - 1, pause="1:1e-6,2:1e-6")):
        return
    plain = model(images, None, AdaptiveSettings(exits=model.depth - 1))
    paused = model(images, None, AdaptiveSettings(exits=model.depth - 1, pause="1:1e-6,2:1e-6"))
    assert [p.positions.shape[1] for p in paused.paused] == [0, 0]
    for got, want in zip(_heads(paused), _heads(plain)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("mode", ["entropy", "random"])
@torch.no_grad()
def test_paused_tokens_come_back_bit_for_bit(case, mode, monkeypatch):
    _, model, images = case
    layer, last = 2, model.depth
    capture = _Capture(monkeypatch)
    generator = torch.Generator(device=images.device).manual_seed(0) if mode == "random" else None
    settings = AdaptiveSettings(record_exits=(layer, last), pause=f"{layer}:0.5", pause_mode=mode,
                                generator=generator)
    if not _pauses(model, images, settings):
        return
    out = model(images, None, settings)
    (_, result), = capture.runs
    # (a model whose exits run a kept last layer records the map after it; a paused token
    # keeps the features layer `layer` left it)
    at_pause, final = result.before_tail.get(layer, result.per_exit[layer]), result.per_exit[last]
    (record,) = out.paused
    assert record.layer == layer and record.rows.tolist() == list(range(images.shape[0]))
    n = at_pause.shape[1]
    assert record.positions.shape == (images.shape[0], n // 2)
    for i in range(images.shape[0]):
        paused = torch.zeros(n, dtype=torch.bool, device=images.device)
        paused[record.positions[i]] = True
        assert torch.equal(final[i, paused], at_pause[i, paused])
        assert (final[i, ~paused] - at_pause[i, ~paused]).abs().amax(-1).min() > 0  # the others moved on


@torch.no_grad()
def test_padding_tokens_pause_first(case, monkeypatch):
    _, model, images = case
    b, _, h, w = images.shape
    mask = torch.zeros(b, h, w, dtype=torch.bool, device=images.device)
    mask[0, h // 2 :] = True  # image 0: bottom half padding
    if not _pauses(model, images, AdaptiveSettings(pause="1:0.6"), mask):
        return
    capture = _Capture(monkeypatch)
    out = model(images, mask, AdaptiveSettings(pause="1:0.6"))
    ((padding, _),) = capture.runs
    assert padding is not None and bool(padding[0].any()) and not bool(padding[1:].any())
    (record,) = out.paused
    n_pad, n_paused = int(padding[0].sum()), record.positions.shape[1]
    assert n_paused >= 1
    # as many padding tokens as fit are paused, and only padding tokens while any are left
    assert int(padding[0, record.positions[0]].sum()) == min(n_pad, n_paused)
    assert out.input_size == (h, w) and out.padding_mask is mask


def test_settings_are_checked_against_the_model(case):
    _, model, images = case
    k = model.depth
    with pytest.raises(ValueError, match="below the encoder depth"):
        model(images, None, AdaptiveSettings(pause=f"{k}:0.5"))
    with pytest.raises(ValueError, match="exits must be in"):
        model(images, None, AdaptiveSettings(exits=k + 1))
    with pytest.raises(ValueError, match="record_exits must be in"):
        model(images, None, AdaptiveSettings(record_exits=(k + 1,)))
    with pytest.raises(ValueError, match="set_gate"):
        model(images, None, AdaptiveSettings(exits="gate"))
    with pytest.raises(ValueError, match="entries"):
        model(images, None, AdaptiveSettings(exits=[2] * (images.shape[0] + 1)))
