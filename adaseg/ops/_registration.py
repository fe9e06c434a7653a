"""Python-side registrations of the compiled ``adaseg::ms_deform_attn`` op.

The C++ library (``adaseg._C``, or the CMake-built one loaded with
``torch.ops.load_library``) defines the schemas and the CPU/CUDA kernels. This module adds
what torch.library expects from Python: the autograd formula (the backward op) and the
fake kernels (output shapes only) that torch.compile and ``torch.library.opcheck`` trace
with. The C++ schema names this module (``m.set_python_module``), so torch imports it
when it needs the fake kernels.
"""

from __future__ import annotations

import torch

_registered = False


def register() -> None:
    """Register autograd and fake kernels for the ops in namespace ``adaseg`` (once).

    Call after the library that defines ``torch.ops.adaseg.ms_deform_attn`` is loaded.
    """
    global _registered
    if _registered:
        return
    torch.library.register_fake("adaseg::ms_deform_attn")(_ms_deform_attn_fake)
    torch.library.register_fake("adaseg::ms_deform_attn_backward")(_ms_deform_attn_backward_fake)
    torch.library.register_autograd(
        "adaseg::ms_deform_attn", _ms_deform_attn_backward, setup_context=_setup_context
    )
    _registered = True


def _ms_deform_attn_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """(N, S, M, D), ..., (N, Lq, M, L, P, 2), (N, Lq, M, L, P) -> empty (N, Lq, M*D)."""
    n, _, m, d = value.shape
    lq = sampling_locations.shape[1]
    return value.new_empty((n, lq, m * d))


def _ms_deform_attn_backward_fake(
    grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
):
    """-> empty grads shaped like value, sampling_locations, attention_weights (contiguous)."""
    return (
        torch.empty_like(value, memory_format=torch.contiguous_format),
        torch.empty_like(sampling_locations, memory_format=torch.contiguous_format),
        torch.empty_like(attention_weights, memory_format=torch.contiguous_format),
    )


def _setup_context(ctx, inputs, output) -> None:
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = inputs
    ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def _ms_deform_attn_backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
    grad_value, grad_locations, grad_weights = torch.ops.adaseg.ms_deform_attn_backward(
        grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
    # spatial_shapes and level_start_index are integer tensors: no gradient.
    return grad_value, None, None, grad_locations, grad_weights
