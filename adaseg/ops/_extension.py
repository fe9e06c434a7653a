"""The compiled extension ``adaseg._C``: is it built, is it loaded, what does it support.

Loading is lazy (on the first op call that can use it), so ``import adaseg`` never needs
the extension. Every answer here is an explicit check: a missing extension is detected
with :func:`importlib.util.find_spec`, not by catching a failed import.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

import torch

MODULE = "adaseg._C"

# Must match the AT_DISPATCH lists of csrc/cpu and csrc/cuda.
CPU_DTYPES = (torch.float32, torch.float64)
CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

BUILD_HINT = (
    "build it with a C++ compiler present: `pip install --no-build-isolation -e .` in the adaseg "
    "checkout (torch must be installed first)"
)

_module: ModuleType | None = None


def is_built() -> bool:
    """True when a compiled ``adaseg._C`` exists next to the package (nothing is loaded)."""
    return _module is not None or importlib.util.find_spec(MODULE) is not None


def load() -> ModuleType:
    """Import ``adaseg._C`` (registering ``torch.ops.adaseg.*``) and the autograd/fake kernels.

    Raises:
        ImportError: the extension is not built, or it is built but cannot be loaded (e.g.
            compiled against another torch); the message says how to fix it.
    """
    global _module
    if _module is not None:
        return _module
    if importlib.util.find_spec(MODULE) is None:
        raise ImportError(f"{MODULE} is not built; {BUILD_HINT}")
    try:
        module = importlib.import_module(MODULE)
    except ImportError as exc:  # a stale or broken build: say how to fix it, do not hide it
        raise ImportError(
            f"{MODULE} exists but cannot be loaded ({exc}); it was probably built against another "
            f"torch. Rebuild: `pip install --no-build-isolation -e .`, or set "
            f"ADASEG_MSDA_BACKEND=reference to run without it"
        ) from exc
    from adaseg.ops import _registration

    _registration.register()
    _module = module
    return module


def with_cuda() -> bool:
    """True when the built extension holds CUDA kernels (loads it)."""
    return bool(load().with_cuda)


OPS = ("ms_deform_attn", "ms_deform_attn_backward")


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether PyTorch's dispatcher holds a ``dispatch_key`` kernel (e.g. "CPU", "CUDA") for
    ``torch.ops.adaseg.<op>``: what the dispatcher will run, not what a build flag claims.
    False when the op is not registered at all (the extension is not loaded)."""
    if not hasattr(torch.ops.adaseg, op):  # no schema: nothing registered the op
        return False
    # OpOverload.has_kernel_for_dispatch_key asks the dispatcher
    # (torch._C._dispatch_has_kernel_for_dispatch_key) through torch's public op object.
    return getattr(torch.ops.adaseg, op).default.has_kernel_for_dispatch_key(dispatch_key)


def unsupported_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why the extension cannot run ms_deform_attn on (device, dtype), or None if it can.

    The reason names how to get the fast path, for the one-time fallback warning.
    """
    if not is_built():
        return f"the compiled extension {MODULE} is not built; {BUILD_HINT}"
    if device.type == "cpu":
        if dtype not in CPU_DTYPES:
            return f"the CPU kernel takes float32/float64, not {dtype}; cast the inputs to float32"
        return None
    if device.type == "cuda":
        load()
        if not has_kernel("ms_deform_attn", "CUDA"):
            return (
                f"{MODULE} was built without CUDA kernels; rebuild with a CUDA build of torch and "
                "nvcc on the PATH (`pip install --no-build-isolation -e .`)"
            )
        if dtype not in CUDA_DTYPES:
            return f"the CUDA kernel takes float32/float64/float16/bfloat16, not {dtype}"
        return None
    return f"{MODULE} has no kernel for device type {device.type!r} (CPU and CUDA only)"
