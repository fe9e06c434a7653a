"""The lean inference pause stage (adaseg.ops.pause_stage) against the reference ops.

Oracles: :mod:`adaseg.ops.reference` (``aux_entropy``, ``topk_keep``: a stable descending
sort, lower index first among ties), ``torch.gather`` of the positions, and whole models run
with the registered ops (``pausing.lean(False)``: the path training takes), which must give
the same heads and pause records bit for bit on CPU.
"""

from __future__ import annotations

import os

import pytest
import torch

import adaseg
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.ops import pause_stage, pausing, reference

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def _case(b, n, d, c, seed, *, ties=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g)
    w, bias = torch.randn(c, d, generator=g) / d ** 0.5, torch.randn(c, generator=g)
    score = torch.randn(b, n, generator=g)
    if ties:  # few distinct values: ties everywhere, also at the keep threshold
        score = (score * 2).round() / 2
    positions = torch.sort(torch.rand(b, 3 * n, generator=g).argsort(1)[:, :n], 1).values  # ascending rows of a 3n map
    return x, w, bias, score, positions


@pytest.mark.parametrize("b,n,ratio,ties", [(1, 7, 0.4, False), (3, 64, 0.3, True), (2, 33, 0.9, True),
                                             (4, 50, 1e-6, False), (2, 200, 0.5, True)])
def test_selection_equals_reference_topk_keep(b, n, ratio, ties):
    x, w, bias, score, positions = _case(b, n, 8, 5, seed=n, ties=ties)
    n_keep = reference.num_kept(n, ratio)
    stage = pause_stage.PauseStage(x, w, bias, n_keep, entropy=False)
    sel = stage.select(x, score.clone(), positions, None)
    keep_idx, pause_idx, kept = reference.topk_keep(x, score, n_keep)
    assert torch.equal(sel.keep_local, keep_idx) and torch.equal(sel.paused_local, pause_idx)
    assert torch.equal(sel.kept, kept)
    assert torch.equal(sel.kept_at, torch.gather(positions, 1, keep_idx))
    assert torch.equal(sel.paused_at, torch.gather(positions, 1, pause_idx))
    first = stage.select(x, score.clone(), None, None)  # no positions yet: positions are the indices
    assert torch.equal(first.kept_at, keep_idx) and torch.equal(first.paused_at, pause_idx)


def test_padding_pauses_first_as_in_the_reference():
    x, w, bias, score, positions = _case(2, 40, 8, 5, seed=3, ties=True)
    padding = torch.zeros(2, 40, dtype=torch.bool)
    padding[0, 5:30] = True
    padding[1, ::3] = True
    n_keep = reference.num_kept(40, 0.4)
    sel = pause_stage.PauseStage(x, w, bias, n_keep, entropy=False).select(x, score.clone(), positions, padding)
    keep_idx, pause_idx, _ = reference.topk_keep(x, score.masked_fill(padding, float("-inf")), n_keep)
    assert torch.equal(sel.keep_local, keep_idx) and torch.equal(sel.paused_local, pause_idx)


def test_entropy_equals_reference():
    x, w, bias, _, _ = _case(2, 30, 16, 7, seed=5)
    stage = pause_stage.PauseStage(x, w, bias, 20, entropy=True)
    assert stage.backend == "reference" and stage.why == "tensors not on CUDA"
    assert torch.equal(stage.scores(x, w, bias), reference.aux_entropy(x, w, bias))


@pytest.mark.skipif(not INTERPRETED, reason="the Triton kernel on CPU needs TRITON_INTERPRET=1 (tests/conftest.py)")
def test_forced_triton_entropy_launcher_equals_reference(monkeypatch):
    monkeypatch.setenv(pausing.BACKEND_ENV, "triton")
    x, w, bias, _, _ = _case(2, 30, 16, 7, seed=6)
    stage = pause_stage.stage_for(x, w, bias, 20)
    assert stage.backend == "triton"
    torch.testing.assert_close(stage.scores(x, w, bias), reference.aux_entropy(x, w, bias), rtol=1e-5, atol=1e-5)


def test_stage_is_built_once_per_shape():
    x, w, bias, _, _ = _case(2, 30, 16, 7, seed=7)
    assert pause_stage.stage_for(x, w, bias, 20) is pause_stage.stage_for(x.clone(), w, bias, 20)
    assert pause_stage.stage_for(x, w, bias, 20) is not pause_stage.stage_for(x, w, bias, 19)


@pytest.mark.parametrize("name", ["segmenter_tiny", "m2f_tiny"])
@pytest.mark.parametrize("mode", ["entropy", "random"])
def test_models_equal_through_the_lean_path_and_the_registered_ops(name, mode):
    torch.manual_seed(0)
    options = {"num_classes": 4, **({"thing_ids": (0, 1)} if name.startswith("m2f") else {})}
    model = adaseg.create_model(name, **options).eval()
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(3, 64, 64, dtype=torch.bool)
    mask[1, 40:] = True  # padding in image 1

    def run(lean: bool):
        g = torch.Generator().manual_seed(4) if mode == "random" else None
        settings = AdaptiveSettings(exits=torch.tensor([2, model.depth, 3]), pause="1:0.4,2:0.5", pause_mode=mode,
                                    generator=g)
        with torch.inference_mode(), pausing.lean(lean):
            return model(images, mask, settings)

    lean, ops = run(True), run(False)
    for got, want in zip(lean.paused, ops.paused):
        assert got.layer == want.layer and torch.equal(got.rows, want.rows) and torch.equal(got.positions, want.positions)
    flat = lambda out: [t for _, t in sorted(adaseg_heads(out.heads).items())]  # noqa: E731
    for got, want in zip(flat(lean), flat(ops)):
        assert torch.equal(got, want)


def adaseg_heads(heads, prefix=""):
    """{path: tensor} of a nested dict/list of tensors."""
    out = {}
    if isinstance(heads, torch.Tensor):
        out[prefix] = heads
    elif isinstance(heads, dict):
        for k, v in heads.items():
            out.update(adaseg_heads(v, f"{prefix}/{k}"))
    elif isinstance(heads, list):
        for i, v in enumerate(heads):
            out.update(adaseg_heads(v, f"{prefix}/{i}"))
    return out


def test_lean_assembler_write_equals_scatter():
    g = torch.Generator().manual_seed(8)
    full = torch.randn(2, 20, 4, generator=g)
    x = torch.randn(2, 6, 4, generator=g)
    idx = torch.stack([torch.randperm(20, generator=g)[:6].sort().values for _ in range(2)])
    want = full.scatter(1, idx.unsqueeze(-1).expand(2, 6, 4), x)
    with torch.inference_mode():
        asm = pausing.PatchAssembler(full.clone(), values=True)
        asm.update(asm.active.clone())  # owned: written in place
        asm._write(x, None, idx)
        assert torch.equal(asm._buffer, want)


def test_doctor_says_which_entropy_the_stage_takes_and_why(monkeypatch):
    from adaseg.cli.doctor import collect

    monkeypatch.delenv(pausing.BACKEND_ENV, raising=False)
    assert pause_stage.explain_stage_backend("cpu") == ("reference", "tensors not on CUDA")
    if pausing._triton_installed():
        backend, why = pause_stage.explain_stage_backend("cuda")
        assert backend == "auto" and "faster of triton and reference" in why
    monkeypatch.setenv(pausing.BACKEND_ENV, "reference")
    assert pause_stage.explain_stage_backend("cuda") == ("reference", f"{pausing.BACKEND_ENV}=reference")
    report = collect()
    assert report["backends"]["pause stage (inference)"]["cuda"]["backend"] == "reference"
