"""The compiled CPU kernels of ms_deform_attn against the pure-PyTorch reference.

Forward and the three input gradients over a grid of shapes (levels 1..4, points 1..8,
heads 1..8, head dims 3/30/71, batch 1..3, Lq 1..300) and location regimes (inside,
partly outside, exactly on the pixel borders), in float64 and float32; gradcheck;
opcheck; determinism of the value gradient's scatter-add.
"""

from __future__ import annotations

import pytest
import torch

from adaseg.ops import _extension, reference
from adaseg.ops.msda_inputs import make_msda_inputs

pytestmark = pytest.mark.skipif(
    not _extension.is_built(),
    reason="adaseg._C is not built (pip install --no-build-isolation -e .)",
)


@pytest.fixture(scope="module", autouse=True)
def _loaded():
    _extension.load()


def ext_op(*args):
    return torch.ops.adaseg.ms_deform_attn(*args)


# (batch, queries, heads, head_dim, level shapes, points, locations); see
# adaseg.ops.msda_inputs for the location modes.
CASES = [
    (1, 1, 1, 3, [(4, 4)], 1, "inside"),
    (2, 17, 2, 30, [(6, 5), (3, 3)], 2, "outside"),
    (3, 300, 8, 3, [(8, 8), (4, 4), (2, 2)], 4, "inside"),
    (1, 64, 4, 71, [(5, 7), (3, 4), (2, 2), (1, 1)], 3, "outside"),
    (2, 45, 3, 16, [(7, 9), (4, 5), (2, 3), (1, 2)], 8, "inside"),
    (3, 33, 5, 8, [(11, 3)], 5, "outside"),
    (1, 120, 8, 32, [(16, 16), (8, 8), (4, 4)], 4, "outside"),
    (2, 40, 2, 30, [(8, 4), (4, 2), (2, 1), (1, 1)], 8, "borders"),
    (3, 25, 6, 3, [(4, 8), (2, 2)], 1, "borders"),
    (1, 9, 1, 71, [(2, 4), (1, 2), (1, 1)], 6, "borders"),
    (2, 84, 4, 8, [(8, 8), (4, 4), (2, 2)], 4, "encoder"),  # Lq = S, points around each token
]
CASE_IDS = [f"n{c[0]}-lq{c[1]}-m{c[2]}-d{c[3]}-L{len(c[4])}-p{c[5]}-{c[6]}" for c in CASES]

# float32 is compared with a tolerance relative to each output's magnitude: the two
# implementations sum the same terms in different orders.
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-11), torch.float32: dict(rtol=2e-4, atol=2e-5)}


def _run(fn, inputs, grad_out):
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*leaves)
    out.backward(grad_out)
    return out.detach(), leaves[0].grad, leaves[3].grad, leaves[4].grad


def _assert_close(actual, expected, dtype, what):
    tol = dict(TOL[dtype])
    tol["atol"] = tol["atol"] * max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, **tol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_and_grads_match_reference(case, dtype):
    n, lq, m, d, shapes, p, where = case
    inputs = make_msda_inputs(
        batch=n, queries=lq, heads=m, head_dim=d, shapes=shapes, points=p, dtype=dtype, locations=where, seed=lq
    )
    grad_out = torch.randn(n, lq, m * d, dtype=dtype, generator=torch.Generator().manual_seed(1))
    got = _run(ext_op, inputs, grad_out)
    # The oracle runs in float64 whatever the dtype under test.
    want = _run(reference.ms_deform_attn, [t.double() if t.is_floating_point() else t for t in inputs], grad_out.double())
    for name, a, b in zip(("output", "grad value", "grad locations", "grad weights"), got, want):
        assert a.dtype == dtype and a.shape == b.shape, name
        _assert_close(a, b.to(dtype), dtype, name)


def test_locations_outside_read_zero():
    """Points wholly outside every level contribute nothing and get zero gradients."""
    value, ss, lsi, loc, w = make_msda_inputs(batch=1, queries=4, heads=2, head_dim=5, shapes=[(4, 4), (2, 2)], points=2, dtype=torch.float64)
    loc = torch.tensor([-0.7, 1.6, 3.0, -2.0], dtype=torch.float64).view(1, 4, 1, 1, 1, 1).expand_as(loc).contiguous()
    out, gv, gl, gw = _run(ext_op, (value, ss, lsi, loc, w), torch.ones(1, 4, 10, dtype=torch.float64))
    assert out.abs().max() == 0
    assert gv.abs().max() == 0 and gl.abs().max() == 0 and gw.abs().max() == 0


def test_gradcheck_float64():
    inputs = make_msda_inputs(batch=2, queries=5, heads=2, head_dim=3, shapes=[(4, 3), (2, 2)], points=2, dtype=torch.float64, locations="outside", margin=0.05)
    leaves = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    assert torch.autograd.gradcheck(ext_op, leaves, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_opcheck(dtype):
    inputs = make_msda_inputs(batch=2, queries=7, heads=2, head_dim=4, shapes=[(4, 4), (2, 3)], points=3, dtype=dtype)
    leaves = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    torch.library.opcheck(torch.ops.adaseg.ms_deform_attn.default, leaves)
    grad_out = torch.randn(2, 7, 8, dtype=dtype)
    torch.library.opcheck(torch.ops.adaseg.ms_deform_attn_backward.default, (grad_out, *inputs))


@pytest.mark.parametrize("heads", [2, 3])
def test_value_grad_is_deterministic_across_thread_counts(heads):
    """The scatter-add walks queries in a fixed order: bitwise equal for 1 and 2 threads.

    With 3 heads, 1 thread takes the one-pass backward and 2 threads the two-pass one.
    """
    inputs = make_msda_inputs(batch=1, queries=200, heads=heads, head_dim=8, shapes=[(8, 8), (4, 4)], points=4, locations="outside")
    grad_out = torch.randn(1, 200, heads * 8)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = torch.ops.adaseg.ms_deform_attn_backward(grad_out, *inputs)
        torch.set_num_threads(2)
        double = torch.ops.adaseg.ms_deform_attn_backward(grad_out, *inputs)
        again = torch.ops.adaseg.ms_deform_attn_backward(grad_out, *inputs)
    finally:
        torch.set_num_threads(before)
    for a, b, c in zip(single, double, again):
        assert torch.equal(a, b) and torch.equal(b, c)
