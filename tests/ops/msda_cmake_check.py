"""Checks the CMake-built ops library against the reference; run by test_ms_deform_attn_cmake.py.

Runs in its own process: the library registers the `adaseg` op namespace with
TORCH_LIBRARY, as adaseg._C does, and a namespace can be registered once per process.

Usage: python msda_cmake_check.py /path/to/libadaseg_ops.so   (prints OK, or raises)
"""

from __future__ import annotations

import sys

import torch

from adaseg.ops import _registration, reference
from adaseg.ops.msda_inputs import make_msda_inputs


def run(fn, inputs, grad_out):
    leaves = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*leaves)
    out.backward(grad_out)
    return [out.detach()] + [leaves[i].grad for i in (0, 3, 4)]


def main(library: str) -> None:
    torch.ops.load_library(library)
    _registration.register()
    assert "adaseg._C" not in sys.modules, "the Python extension must not be loaded here"
    op = torch.ops.adaseg.ms_deform_attn
    cases = [
        (2, 50, 3, 30, [(6, 5), (3, 3)], 4, "outside", torch.float64),
        (3, 20, 2, 71, [(8, 4), (4, 2), (2, 1), (1, 1)], 2, "borders", torch.float64),
        (1, 40, 8, 32, [(16, 16), (8, 8), (4, 4)], 4, "inside", torch.float32),
    ]
    for n, lq, m, d, shapes, p, where, dtype in cases:
        inputs = make_msda_inputs(batch=n, queries=lq, heads=m, head_dim=d, shapes=shapes, points=p, dtype=dtype, locations=where)
        grad_out = torch.randn(n, lq, m * d, dtype=dtype)
        tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=1e-4)
        for got, want in zip(run(op, inputs, grad_out), run(reference.ms_deform_attn, inputs, grad_out)):
            torch.testing.assert_close(got, want, **tol)
    small = make_msda_inputs(batch=2, queries=4, heads=2, head_dim=3, shapes=[(4, 3), (2, 2)], points=2, dtype=torch.float64, locations="outside", margin=0.05)
    leaves = [t.clone().requires_grad_(t.is_floating_point()) for t in small]
    assert torch.autograd.gradcheck(op, leaves, eps=1e-6, atol=1e-7)
    torch.library.opcheck(op.default, leaves)
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1])
