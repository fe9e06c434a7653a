"""Compiled Triton pausing kernels vs the reference on a GPU (run by test_pausing_cuda.py).

A script rather than a test module because the test process runs triton in interpreter
mode (tests/conftest.py sets TRITON_INTERPRET=1 before triton is imported), and compiled
kernels need a fresh process without it. ``--small`` shrinks the shapes so the script itself
can be checked on a CPU under the interpreter.

    python tests/ops/pausing_cuda_check.py [--small]
"""

from __future__ import annotations

import math
import os
import sys

import torch

from adaseg.ops import pausing, reference
from adaseg.ops.reference import num_kept
from adaseg.ops.triton import _common
from adaseg.ops.triton import library as lib


def main(small: bool) -> None:
    device = "cpu" if _common.INTERPRET else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device (and not under TRITON_INTERPRET=1)")
    # float32 dots: tf32x3 in the kernel, IEEE float32 in the reference (PyTorch's default).
    torch.backends.cuda.matmul.allow_tf32 = False
    # (B, N, D, C): PAUMER ViT-Ti/ViT-S at 512x512, Mask2Former's encoder, and odd sizes.
    shapes = [(2, 37, 24, 19), (1, 50, 70, 257)] if small else [
        (32, 1024, 192, 19), (32, 1024, 384, 150), (2, 5376, 256, 133), (3, 777, 70, 257), (2, 9000, 64, 19),
    ]
    g = torch.Generator().manual_seed(0)
    for b, n, d, c in shapes:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            x = (torch.randn(b, n, d, generator=g) * 2).to(device, dtype)
            w = (torch.randn(c, d, generator=g) * 3 / math.sqrt(d)).to(device, dtype)
            bias = torch.randn(c, generator=g).to(device, dtype)
            want = reference.aux_entropy(x.double(), w.double(), bias.double())
            got = lib.aux_entropy(x, w, bias)
            err = (got.double() - want).abs().max().item()
            assert err < 2e-4, f"entropy {dtype} {(b, n, d, c)}: max error {err:.2e}"

            h = want.float()
            n_keep = num_kept(n, 0.4)
            ref = reference.topk_keep(x, h, n_keep)
            for method in ("count", "sort"):
                kept, keep_idx, pause_idx = lib.topk_keep(x, h, n_keep, method)
                for name, a, r in zip(("keep_idx", "pause_idx", "kept"), (keep_idx, pause_idx, kept), ref):
                    assert torch.equal(a, r), f"topk {method} {name} {dtype} {(b, n, d)}"
            ties = torch.randint(0, 3, (b, n), generator=g).to(device, torch.float32)
            kept, keep_idx, pause_idx = lib.topk_keep(x, ties, n_keep, "auto")
            for a, r in zip((keep_idx, pause_idx, kept), reference.topk_keep(x, ties, n_keep)):
                assert torch.equal(a, r), f"topk ties {dtype} {(b, n, d)}"

            idx = ref[0]
            tokens = ref[2] * 2
            assert torch.equal(lib.gather_rows(x, idx), reference.gather_tokens(x, idx))
            assert torch.equal(lib.assemble(x, idx, tokens), reference.assemble(x, idx, tokens))
            print(f"ok {dtype} B={b} N={n} D={d} C={c} entropy err {err:.1e}", flush=True)

    # Gradients through the Triton ops, float64 (row copies only) on a mid-size shape.
    b, n, d = (2, 33, 8) if small else (4, 1500, 64)
    x = torch.randn(b, n, d, generator=g, dtype=torch.float64).to(device).requires_grad_()
    h = torch.rand(b, n, generator=g).to(device)
    up = torch.randn(b, n, d, generator=g, dtype=torch.float64).to(device)
    os.environ[pausing.BACKEND_ENV] = "triton"
    asm = pausing.PatchAssembler(x, values=True)  # the in-place write (WriteRows) under autograd
    keep_idx, pause_idx, kept = pausing.topk_keep(x, h, num_kept(n, 0.4))
    asm.pause(kept=kept, kept_at=keep_idx, paused_local=pause_idx, paused_at=pause_idx)
    asm.update(kept * 3)
    out = asm.full()
    (g_tr,) = torch.autograd.grad((out * up).sum(), x)
    os.environ[pausing.BACKEND_ENV] = "reference"
    ref_out = reference.assemble(x, keep_idx, reference.topk_keep(x, h, num_kept(n, 0.4))[2] * 3)
    (g_ref,) = torch.autograd.grad((ref_out * up).sum(), x)
    assert torch.equal(out, ref_out) and torch.equal(g_tr, g_ref), "assembler forward/gradient"
    print("ALL OK")


if __name__ == "__main__":
    main(small="--small" in sys.argv[1:])
