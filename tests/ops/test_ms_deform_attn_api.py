"""ms_deform_attn's contract around the kernels: input checks, non-contiguous and empty
inputs, the backend dispatcher (env override, one fallback warning), torch.compile, and
the MSDeformAttn module on the extension vs the reference."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch

from adaseg.nn.ms_deform_attn import MSDeformAttn
from adaseg.ops import _extension, reference
from adaseg.ops.msda_inputs import level_start_index, make_msda_inputs

# adaseg.ops re-exports the function under the module's name, hence import_module.
dispatch_module = importlib.import_module("adaseg.ops.ms_deform_attn")

needs_ext = pytest.mark.skipif(
    not _extension.is_built(), reason="adaseg._C is not built (pip install --no-build-isolation -e .)"
)


def small_inputs(dtype=torch.float32, **kw):
    args = dict(batch=2, queries=6, heads=2, head_dim=4, shapes=[(4, 4), (2, 3)], points=3, dtype=dtype)
    args.update(kw)
    return make_msda_inputs(**args)


@pytest.fixture
def ext():
    if not _extension.is_built():
        pytest.skip("adaseg._C is not built (pip install --no-build-isolation -e .)")
    _extension.load()
    return torch.ops.adaseg.ms_deform_attn


# --- input checks --------------------------------------------------------------------


def _bad(kind):
    value, ss, lsi, loc, w = small_inputs()
    if kind == "S vs spatial_shapes":
        value = value[:, :-1]
    elif kind == "level_start_index values":
        lsi = lsi + 1
    elif kind == "level_start_index length":
        lsi = lsi[:1]
    elif kind == "negative shape":
        ss = torch.tensor([[4, 4], [-2, -3]])
    elif kind == "weights shape":
        w = w[..., :-1]
    elif kind == "levels of locations":
        loc = loc[:, :, :, :1]
    elif kind == "heads of locations":
        loc = loc[:, :, :1]
    elif kind == "value rank":
        value = value.flatten(2)
    elif kind == "dtype mix":
        w = w.double()
    elif kind == "float spatial_shapes":
        ss = ss.float()
    elif kind == "int32 level_start_index":
        lsi = lsi.int()
    elif kind == "half on CPU":
        value, loc, w = value.half(), loc.half(), w.half()
    return value, ss, lsi, loc, w


BAD = {
    "S vs spatial_shapes": "spatial_shapes sums to",
    "level_start_index values": "exclusive prefix sum",
    "level_start_index length": "level_start_index must be (L,)",
    "negative shape": "non-negative",
    "weights shape": "attention_weights must be",
    "levels of locations": "does not match value",
    "heads of locations": "does not match value",
    "value rank": "value must be (N, S, M, D)",
    "dtype mix": "share one dtype",
    "float spatial_shapes": "must be int64",
    "int32 level_start_index": "must be int64",
    "half on CPU": "CPU kernel supports float32 and float64",
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_inputs_raise_clear_errors(ext, kind):
    with pytest.raises(RuntimeError, match=BAD[kind].replace("(", r"\(").replace(")", r"\)")):
        ext(*_bad(kind))


def test_bad_grad_output_raises(ext):
    inputs = small_inputs()
    with pytest.raises(RuntimeError, match=r"grad_output must be \(N, Lq, M\*D\)"):
        torch.ops.adaseg.ms_deform_attn_backward(torch.zeros(2, 6, 7), *inputs)


def test_non_contiguous_inputs(ext):
    value, ss, lsi, loc, w = small_inputs(dtype=torch.float64)
    # Same numbers, strided layouts.
    value_nc = value.transpose(0, 1).contiguous().transpose(0, 1)
    loc_nc = loc.transpose(1, 2).contiguous().transpose(1, 2)
    w_nc = w.permute(4, 3, 2, 1, 0).contiguous().permute(4, 3, 2, 1, 0)
    ss_nc = ss.t().contiguous().t()
    assert not (value_nc.is_contiguous() or loc_nc.is_contiguous() or w_nc.is_contiguous() or ss_nc.is_contiguous())
    torch.testing.assert_close(ext(value_nc, ss_nc, lsi, loc_nc, w_nc), reference.ms_deform_attn(value, ss, lsi, loc, w))
    grad = torch.randn(8, 6, 2, dtype=torch.float64).permute(2, 1, 0)
    got = torch.ops.adaseg.ms_deform_attn_backward(grad, value_nc, ss_nc, lsi, loc_nc, w_nc)
    want = torch.ops.adaseg.ms_deform_attn_backward(grad.contiguous(), value, ss, lsi, loc, w)
    for a, b in zip(got, want):
        assert a.is_contiguous()
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("batch, queries", [(0, 5), (2, 0), (0, 0)])
def test_empty_batch_or_queries(ext, batch, queries):
    value, ss, lsi, loc, w = small_inputs(batch=max(batch, 1), queries=max(queries, 1))
    value, loc, w = value[:batch], loc[:batch, :queries], w[:batch, :queries]
    leaves = [t.clone().requires_grad_() for t in (value, loc, w)]
    out = ext(leaves[0], ss, lsi, leaves[1], leaves[2])
    assert out.shape == (batch, queries, 8)
    out.sum().backward()
    for leaf in leaves:
        assert leaf.grad.shape == leaf.shape and (leaf.grad == 0).all()


# --- dispatcher ----------------------------------------------------------------------


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(dispatch_module, "_warned", set())


@needs_ext
def test_dispatcher_uses_extension_for_cpu_float(monkeypatch):
    monkeypatch.delenv(dispatch_module.ENV_VAR, raising=False)
    inputs = small_inputs()
    assert dispatch_module.select_backend(inputs[0]) == "ext"
    torch.testing.assert_close(dispatch_module.ms_deform_attn(*inputs), reference.ms_deform_attn(*inputs), rtol=1e-5, atol=1e-6)


def test_env_forces_reference(monkeypatch):
    monkeypatch.setenv(dispatch_module.ENV_VAR, "reference")
    calls = []
    original = reference.ms_deform_attn
    monkeypatch.setattr(reference, "ms_deform_attn", lambda *a: calls.append(1) or original(*a))
    inputs = small_inputs()
    dispatch_module.ms_deform_attn(*inputs)
    assert calls == [1]


def test_env_ext_refuses_unsupported_dtype(monkeypatch):
    monkeypatch.setenv(dispatch_module.ENV_VAR, "ext")
    inputs = small_inputs(dtype=torch.float16)
    with pytest.raises(RuntimeError, match="ADASEG_MSDA_BACKEND=ext"):
        dispatch_module.ms_deform_attn(*inputs)


def test_env_unknown_value(monkeypatch):
    monkeypatch.setenv(dispatch_module.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="ADASEG_MSDA_BACKEND='fast'"):
        dispatch_module.select_backend(torch.zeros(1))


def test_fallback_warns_once_with_the_fix(monkeypatch, fresh_warnings):
    monkeypatch.delenv(dispatch_module.ENV_VAR, raising=False)
    value = torch.zeros(1, dtype=torch.float16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert dispatch_module.select_backend(value) == "reference"
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "reference" in message and ("float32" in message or "pip install" in message)


def test_missing_extension_falls_back(monkeypatch, fresh_warnings):
    """With no built extension the op still works (reference) and says how to build it."""
    monkeypatch.delenv(dispatch_module.ENV_VAR, raising=False)
    monkeypatch.setattr(_extension, "is_built", lambda: False)
    inputs = small_inputs()
    with pytest.warns(RuntimeWarning, match="pip install --no-build-isolation"):
        out = dispatch_module.ms_deform_attn(*inputs)
    torch.testing.assert_close(out, reference.ms_deform_attn(*inputs))


# --- torch.compile and the module ----------------------------------------------------


@needs_ext
def test_torch_compile_traces_the_op(monkeypatch):
    """Fake kernels + autograd registration let AOTAutograd trace forward and backward."""
    monkeypatch.delenv(dispatch_module.ENV_VAR, raising=False)
    torch._dynamo.reset()
    inputs = small_inputs(dtype=torch.float64)

    def loss(value, loc, w):
        return (dispatch_module.ms_deform_attn(value, inputs[1], inputs[2], loc, w) ** 2).sum()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    leaves = [inputs[i].clone().requires_grad_() for i in (0, 3, 4)]
    compiled(*leaves).backward()
    ref_leaves = [inputs[i].clone().requires_grad_() for i in (0, 3, 4)]
    (reference.ms_deform_attn(ref_leaves[0], inputs[1], inputs[2], ref_leaves[1], ref_leaves[2]) ** 2).sum().backward()
    for a, b in zip(leaves, ref_leaves):
        torch.testing.assert_close(a.grad, b.grad)


@needs_ext
def test_module_extension_matches_reference(monkeypatch):
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=4).double()
    shapes = torch.tensor([[8, 8], [4, 4], [2, 2]])
    s = int((shapes[:, 0] * shapes[:, 1]).sum())
    query = torch.randn(2, s, 32, dtype=torch.float64)
    ref_points = torch.rand(2, s, 3, 2, dtype=torch.float64)
    src = torch.randn(2, s, 32, dtype=torch.float64)
    outs, grads = [], []
    for backend in ("ext", "reference"):
        monkeypatch.setenv(dispatch_module.ENV_VAR, backend)
        module.zero_grad()
        out = module(query, ref_points, src, shapes, level_start_index(shapes))
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in module.parameters()])
    torch.testing.assert_close(outs[0], outs[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
