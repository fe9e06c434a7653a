"""Dispatcher for patch pausing (PAUMER): auxiliary entropy, top-k keep, assembly.

For now only the pure-PyTorch reference exists; Triton kernels for CUDA tensors
plug in here. Shapes and semantics are those of :mod:`adaseg.ops.reference`.
"""

from __future__ import annotations

import torch

from adaseg.ops import reference
from adaseg.ops.reference import num_kept

__all__ = ["aux_entropy", "topk_keep", "assemble", "gather_tokens", "num_kept"]


def aux_entropy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(B, N, D), (C, D), (C,) -> (B, N) float32 entropy of softmax(x W^T + b)."""
    return reference.aux_entropy(x, weight, bias)


def topk_keep(x: torch.Tensor, entropy: torch.Tensor, n_keep: int):
    """(B, n, D), (B, n), n_keep -> keep_idx (B, n_keep), pause_idx (B, n-n_keep), kept (B, n_keep, D)."""
    return reference.topk_keep(x, entropy, n_keep)


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, N, D), (B, n) -> (B, n, D)."""
    return reference.gather_tokens(x, idx)


def assemble(base: torch.Tensor, idx: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, D), (B, n), (B, n, D) -> (B, N, D) with rows idx replaced by tokens."""
    return reference.assemble(base, idx, tokens)
