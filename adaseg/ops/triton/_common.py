"""What the kernels need to know about how triton runs them."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# triton.jit picks the interpreter or the compiler when a kernel is *decorated*, i.e. when
# these modules are first imported; record that choice so launchers and the dispatcher
# agree with how the kernels were actually built.
INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"



def check_device(*tensors: torch.Tensor) -> None:
    """Raise unless every tensor is on one device the kernels can run on.

    Compiled kernels need CUDA tensors; the interpreter runs on CPU tensors.
    """
    device = tensors[0].device
    for t in tensors[1:]:
        if t.device != device:
            raise ValueError(f"pausing kernels need all tensors on one device, got {device} and {t.device}")
    if device.type != "cuda" and not INTERPRET:
        raise RuntimeError(
            f"Triton pausing kernels need CUDA tensors (got {device.type}); on CPU they run only "
            "under the Triton interpreter (TRITON_INTERPRET=1 set before triton is imported)"
        )


def pow2_at_least(n: int, lo: int = 16, hi: int = 1 << 30) -> int:
    """Smallest power of two >= n, clamped to [lo, hi] (tl.arange and tl.dot need powers of two, >= 16)."""
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))
