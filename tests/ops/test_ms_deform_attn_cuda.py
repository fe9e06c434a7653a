"""The CUDA kernels of ms_deform_attn against the reference (float64 oracle on the same GPU).

Skipped where no GPU is present or the extension was built without CUDA kernels.
"""

from __future__ import annotations

import pytest
import torch

from adaseg.ops import _extension, reference
from adaseg.ops.msda_inputs import make_msda_inputs


def _skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA device"
    if not _extension.is_built():
        return "adaseg._C is not built"
    if not _extension.with_cuda():
        return "adaseg._C was built without CUDA kernels (torch without CUDA, or no nvcc)"
    return None


_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

CASES = [
    (1, 1, 1, 3, [(4, 4)], 1, "inside"),
    (3, 300, 8, 30, [(8, 8), (4, 4), (2, 2)], 4, "outside"),  # batch 3: no divisibility needs
    (5, 64, 4, 71, [(5, 7), (3, 4), (2, 2), (1, 1)], 8, "outside"),
    (2, 40, 2, 32, [(8, 4), (4, 2), (2, 1), (1, 1)], 3, "borders"),
]
TOL = {
    torch.float64: dict(rtol=1e-9, atol=1e-10),
    torch.float32: dict(rtol=2e-4, atol=2e-5),
    torch.float16: dict(rtol=2e-2, atol=5e-3),
    torch.bfloat16: dict(rtol=5e-2, atol=2e-2),
}


def _run(fn, inputs, grad_out):
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*leaves)
    out.backward(grad_out)
    return [out.detach()] + [leaves[i].grad for i in (0, 3, 4)]


@pytest.mark.parametrize("dtype", list(TOL), ids=["f64", "f32", "f16", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"n{c[0]}-lq{c[1]}-m{c[2]}-d{c[3]}-L{len(c[4])}-{c[6]}")
def test_cuda_matches_reference(case, dtype):
    _extension.load()
    n, lq, m, d, shapes, p, where = case
    inputs = make_msda_inputs(
        batch=n, queries=lq, heads=m, head_dim=d, shapes=shapes, points=p, dtype=dtype, device="cuda", locations=where, margin=0.02
    )
    grad_out = torch.randn(n, lq, m * d, device="cuda").to(dtype)
    got = _run(torch.ops.adaseg.ms_deform_attn, inputs, grad_out)
    # Oracle: the reference in float64 on the same inputs (rounded to dtype first).
    want = _run(reference.ms_deform_attn, [t.double() if t.is_floating_point() else t for t in inputs], grad_out.double())
    for name, a, b in zip(("output", "grad value", "grad locations", "grad weights"), got, want):
        assert a.dtype == dtype and a.is_cuda, name
        tol = dict(TOL[dtype])
        tol["atol"] *= max(1.0, float(b.abs().max()))
        torch.testing.assert_close(a.double(), b, **tol, msg=lambda msg: f"{name}: {msg}")


def test_cuda_gradcheck_and_opcheck():
    _extension.load()
    inputs = make_msda_inputs(batch=2, queries=5, heads=2, head_dim=3, shapes=[(4, 3), (2, 2)], points=2, dtype=torch.float64, device="cuda", locations="outside", margin=0.05)
    leaves = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    assert torch.autograd.gradcheck(torch.ops.adaseg.ms_deform_attn, leaves, eps=1e-6, atol=1e-7)
    torch.library.opcheck(torch.ops.adaseg.ms_deform_attn.default, leaves)


def test_cuda_devices_must_match():
    _extension.load()
    value, ss, lsi, loc, w = make_msda_inputs(batch=1, queries=3, heads=1, head_dim=4, shapes=[(4, 4)], points=2, device="cuda")
    with pytest.raises(RuntimeError, match="all inputs must be on one device"):
        torch.ops.adaseg.ms_deform_attn(value, ss.cpu(), lsi.cpu(), loc, w)


def test_cuda_empty_queries():
    _extension.load()
    value, ss, lsi, loc, w = make_msda_inputs(batch=2, queries=1, heads=2, head_dim=4, shapes=[(4, 4)], points=2, device="cuda")
    out = torch.ops.adaseg.ms_deform_attn(value, ss, lsi, loc[:, :0], w[:, :0])
    assert out.shape == (2, 0, 8) and out.is_cuda
