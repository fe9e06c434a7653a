"""The Triton pausing kernels as PyTorch custom ops (``torch.ops.adaseg_pause.*``).

Registered through ``torch.library.custom_op`` so the dispatcher, autograd, fake tensors
(torch.compile / export tracing) and ``torch.library.opcheck`` see them, rather than as
bare Python calls. Each op has a fake (shape-only) implementation and, where training
needs it, an autograd formula built from the other ops:

    aux_entropy(x, weight, bias) -> H            no gradient (selection only)
    topk_keep(x, entropy, n_keep, method) -> (kept, keep_idx, pause_idx)
                                                 d kept / d x: scatter_rows
    gather_rows(x, idx) -> x[b, idx[b]]          backward: scatter-add (indices may repeat)
    scatter_rows(src, idx, n) -> zeros with rows idx = src      backward: gather_rows
    zero_rows(x, idx) -> copy of x with rows idx zeroed         backward: zero_rows
    assemble(base, idx, tokens) -> copy of base with rows idx = tokens
                                                 backward: zero_rows / gather_rows

The namespace is separate from the C++ ``adaseg`` library (ms_deform_attn), which is a
TORCH_LIBRARY definition this module must not collide with. Importing this module imports
triton; :mod:`adaseg.ops.pausing` imports it only once it has chosen the Triton backend.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.library import custom_op

from adaseg.ops.triton import entropy as _entropy
from adaseg.ops.triton import rows as _rows
from adaseg.ops.triton import topk as _topk

# ---------------------------------------------------------------------------- aux_entropy


@custom_op("adaseg_pause::aux_entropy", mutates_args=())
def aux_entropy(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """(B, N, D), (C, D), (C,) -> (B, N) float32 entropy of softmax(x W^T + b), fused."""
    return _entropy.aux_entropy(x, weight, bias)


@aux_entropy.register_fake
def _(x, weight, bias):
    return x.new_empty(x.shape[:2], dtype=torch.float32)


# ---------------------------------------------------------------------------- row moves


@custom_op("adaseg_pause::gather_rows", mutates_args=())
def gather_rows(x: Tensor, idx: Tensor) -> Tensor:
    """(B, N, D), (B, n) int64 -> (B, n, D)."""
    return _rows.gather_rows(x, idx)


@gather_rows.register_fake
def _(x, idx):
    return x.new_empty((x.shape[0], idx.shape[1], x.shape[2]))


def _gather_setup(ctx, inputs, output):
    x, idx = inputs
    ctx.save_for_backward(idx)
    ctx.x_shape = x.shape


def _gather_backward(ctx, grad):
    (idx,) = ctx.saved_tensors
    # Indices may repeat (the reference allows it): accumulate, do not store.
    grad_x = grad.new_zeros(ctx.x_shape).scatter_add_(1, idx.unsqueeze(-1).expand_as(grad), grad)
    return grad_x, None


gather_rows.register_autograd(_gather_backward, setup_context=_gather_setup)


@custom_op("adaseg_pause::scatter_rows", mutates_args=())
def scatter_rows(src: Tensor, idx: Tensor, n_rows: int) -> Tensor:
    """(B, n, D), (B, n) unique int64, N -> (B, N, D) zeros with rows idx set to src."""
    out = src.new_zeros((src.shape[0], n_rows, src.shape[2]))
    return _rows.move_rows(out, src, dst_idx=idx)


@scatter_rows.register_fake
def _(src, idx, n_rows):
    return src.new_empty((src.shape[0], n_rows, src.shape[2]))


def _scatter_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _scatter_backward(ctx, grad):
    (idx,) = ctx.saved_tensors
    return gather_rows(grad, idx), None, None


scatter_rows.register_autograd(_scatter_backward, setup_context=_scatter_setup)


@custom_op("adaseg_pause::zero_rows", mutates_args=())
def zero_rows(x: Tensor, idx: Tensor) -> Tensor:
    """(B, N, D), (B, n) int64 -> copy of x with rows idx set to zero."""
    return _rows.move_rows(x.clone(memory_format=torch.contiguous_format), None, dst_idx=idx)


@zero_rows.register_fake
def _(x, idx):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _zero_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _zero_backward(ctx, grad):
    (idx,) = ctx.saved_tensors
    return zero_rows(grad, idx), None


zero_rows.register_autograd(_zero_backward, setup_context=_zero_setup)


@custom_op("adaseg_pause::assemble", mutates_args=())
def assemble(base: Tensor, idx: Tensor, tokens: Tensor) -> Tensor:
    """(B, N, D), (B, n) unique int64, (B, n, D) -> copy of base with rows idx = tokens (base's dtype)."""
    out = base.clone(memory_format=torch.contiguous_format)
    return _rows.move_rows(out, tokens, dst_idx=idx)


@assemble.register_fake
def _(base, idx, tokens):
    return torch.empty_like(base, memory_format=torch.contiguous_format)


def _assemble_setup(ctx, inputs, output):
    _, idx, tokens = inputs
    ctx.save_for_backward(idx)
    ctx.tokens_dtype = tokens.dtype


def _assemble_backward(ctx, grad):
    (idx,) = ctx.saved_tensors
    grad_base = grad_tokens = None
    if ctx.needs_input_grad[0]:
        grad_base = zero_rows(grad, idx)  # overwritten rows of base do not reach the output
    if ctx.needs_input_grad[2]:
        grad_tokens = gather_rows(grad, idx).to(ctx.tokens_dtype)
    return grad_base, None, grad_tokens


assemble.register_autograd(_assemble_backward, setup_context=_assemble_setup)


# ---------------------------------------------------------------------------- top-k keep


@custom_op("adaseg_pause::topk_keep", mutates_args=())
def topk_keep(x: Tensor, entropy: Tensor, n_keep: int, method: str) -> tuple[Tensor, Tensor, Tensor]:
    """(B, n, D), (B, n), n_keep -> kept (B, n_keep, D), keep_idx (B, n_keep), pause_idx (B, n - n_keep).

    The float output comes first (the dispatcher reorders to the reference's order):
    opcheck's autograd harness sums the outputs into the first one's dtype.
    """
    keep_idx, pause_idx, kept = _topk.topk_keep_forward(x, entropy, n_keep, method=method)
    return kept, keep_idx, pause_idx


@topk_keep.register_fake
def _(x, entropy, n_keep, method):
    b, n, d = x.shape
    return (
        x.new_empty((b, n_keep, d)),
        x.new_empty((b, n_keep), dtype=torch.int64),
        x.new_empty((b, n - n_keep), dtype=torch.int64),
    )


def _topk_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.n_rows = inputs[0].shape[1]
    ctx.mark_non_differentiable(output[1], output[2])  # indices


def _topk_backward(ctx, grad_kept, _grad_keep, _grad_pause):
    (keep_idx,) = ctx.saved_tensors
    return scatter_rows(grad_kept, keep_idx, ctx.n_rows), None, None, None


topk_keep.register_autograd(_topk_backward, setup_context=_topk_setup)


# ---------------------------------------------------------------------------- in-place write


class WriteRows(torch.autograd.Function):
    """In place: ``buffer[b, dst_idx[b, r]] = x[b, src_idx[b, r]]`` (src_idx None: every row of x).

    The patch assembler's write: a paused token goes straight from the active tensor to its
    final row of the full-size output, so no per-stage copy of the full tensor exists. An
    autograd.Function rather than a custom op because it mutates ``buffer`` and must stay
    differentiable (custom ops cannot register autograd for mutated inputs); its backward is
    made of the ops above.
    """

    @staticmethod
    def forward(ctx, buffer: Tensor, x: Tensor, src_idx: Tensor | None, dst_idx: Tensor) -> Tensor:
        ctx.mark_dirty(buffer)
        ctx.save_for_backward(src_idx if src_idx is not None else dst_idx.new_empty(0), dst_idx)
        ctx.has_src_idx = src_idx is not None
        ctx.x_rows, ctx.x_dtype = x.shape[1], x.dtype
        return _rows.move_rows(buffer, x, src_idx=src_idx, dst_idx=dst_idx)

    @staticmethod
    def backward(ctx, grad: Tensor):
        src_idx, dst_idx = ctx.saved_tensors
        grad_buffer = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_buffer = zero_rows(grad, dst_idx)  # overwritten rows: no gradient to the old buffer
        if ctx.needs_input_grad[1]:
            grad_x = gather_rows(grad, dst_idx)
            if ctx.has_src_idx:  # a partition of x's rows: unique, plain stores
                grad_x = scatter_rows(grad_x, src_idx, ctx.x_rows)
            grad_x = grad_x.to(ctx.x_dtype)
        return grad_buffer, grad_x, None, None
