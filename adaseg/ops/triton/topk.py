"""Top-k keep: per image, keep the n_keep highest-entropy tokens (lower index wins ties).

Two kernels, one read of the kept tokens:

1. ``keep flags`` (B, N) int8. For N up to ``COUNT_MAX_N`` a token's rank is counted
   directly: rank_i = #{j : H_j > H_i, or H_j == H_i and j < i} (NaN ranks above every
   number, like ``torch.sort``), kept iff rank_i < n_keep. That is O(N^2) compares, but
   they run from registers with the grid spread over (token blocks x images), so a
   (32, 1024) or (2, 5376) batch is one launch where ``torch.sort`` (segmented radix
   sort) plus index sorts are several. Above ``COUNT_MAX_N`` the quadratic cost should
   outgrow the launches, and the flags come from a stable ``torch.sort`` instead; both
   give exactly the reference's order. (COUNT_MAX_N is an estimate: no GPU was available
   to measure the crossover; ``adaseg bench pause`` times the chosen path.)
2. ``compact``: each (token block, image) program counts the kept flags before its block,
   prefix-sums its own, and writes keep_idx and pause_idx (both ascending, because
   positions follow token order) and the kept rows of x into (B, n_keep, D). Paused rows
   are not read here; the patch assembler reads them once, when it files them.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from adaseg.ops.triton._common import INTERPRET, check_device, pow2_at_least

COUNT_MAX_N = 8192


@triton.jit
def _keep_flags_kernel(h_ptr, flag_ptr, N, n_keep, shb, shn, BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr):
    i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    b = tl.program_id(1).to(tl.int64)
    i_ok = i < N
    hi = tl.load(h_ptr + b * shb + i * shn, mask=i_ok, other=0.0)
    nan_i = hi != hi
    rank = tl.zeros((BLOCK_I,), tl.int32)
    for j0 in range(0, N, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        j_ok = j < N
        hj = tl.load(h_ptr + b * shb + j * shn, mask=j_ok, other=0.0)
        nan_j = hj != hj
        before = j[None, :] < i[:, None]
        beats = (hj[None, :] > hi[:, None]) | ((hj[None, :] == hi[:, None]) & before) | nan_j[None, :]
        # A NaN token is beaten only by NaNs before it (torch.sort puts NaN first, stably).
        beats = tl.where(nan_i[:, None], nan_j[None, :] & before, beats) & j_ok[None, :]
        rank += tl.sum(beats.to(tl.int32), axis=1)
    tl.store(flag_ptr + b * N + i, (rank < n_keep).to(tl.int8), mask=i_ok)


@triton.jit
def _compact_kernel(
    flag_ptr, x_ptr, keep_ptr, pause_ptr, kept_ptr,
    N, D, n_keep, n_pause,
    sxb, sxn, sxd,
    BLOCK_I: tl.constexpr, BLOCK_D: tl.constexpr, PREFIX: tl.constexpr,
):
    blk = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    start = blk * BLOCK_I
    # Kept tokens before this block, PREFIX flags per step (a few wide loads, not one per
    # earlier block). Carried as a tensor: a Python int would be a constexpr in the loop.
    before = tl.zeros((PREFIX,), tl.int32)
    for j0 in range(0, start, PREFIX):
        j = j0 + tl.arange(0, PREFIX)
        before += tl.load(flag_ptr + b * N + j, mask=j < start, other=0).to(tl.int32)
    base = tl.sum(before, axis=0)
    i = start + tl.arange(0, BLOCK_I)
    i_ok = i < N
    f = tl.load(flag_ptr + b * N + i, mask=i_ok, other=0).to(tl.int32)
    pos_keep = base + tl.cumsum(f, axis=0) - f  # kept tokens before i
    pos_pause = i - pos_keep  # paused tokens before i
    is_keep = i_ok & (f == 1)
    is_pause = i_ok & (f == 0)
    i64 = i.to(tl.int64)
    tl.store(keep_ptr + b * n_keep + pos_keep, i64, mask=is_keep)
    tl.store(pause_ptr + b * n_pause + pos_pause, i64, mask=is_pause)
    x_rows = x_ptr + b * sxb + i64 * sxn
    kept_rows = kept_ptr + (b * n_keep + pos_keep.to(tl.int64)) * D
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        ok = is_keep[:, None] & (ds < D)[None, :]
        v = tl.load(x_rows[:, None] + ds[None, :] * sxd, mask=ok)
        tl.store(kept_rows[:, None] + ds[None, :], v, mask=ok)


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def keep_flags(entropy: torch.Tensor, n_keep: int, *, method: str = "auto", block_i: int | None = None, block_j: int | None = None) -> torch.Tensor:
    """(B, N) entropy -> (B, N) int8, 1 for the n_keep highest (ties: lower index), else 0.

    ``method``: "count" (rank-by-counting kernel), "sort" (stable torch.sort) or "auto"
    (count for N <= COUNT_MAX_N).
    """
    b, n = entropy.shape
    if method == "auto":
        method = "count" if n <= COUNT_MAX_N else "sort"
    if method == "sort":
        order = torch.sort(entropy, dim=1, descending=True, stable=True).indices
        flags = torch.zeros((b, n), dtype=torch.int8, device=entropy.device)
        return flags.scatter_(1, order[:, :n_keep], 1)
    if method != "count":
        raise ValueError(f"keep_flags: method must be auto, count or sort, got {method!r}")
    flags = torch.empty((b, n), dtype=torch.int8, device=entropy.device)  # every entry is written
    if b == 0 or n == 0:
        return flags
    if INTERPRET:
        bi, bj = block_i or 64, block_j or pow2_at_least(n, hi=1024)
    else:
        # Spread small batches (Mask2Former: B=2, N~5k) over the SMs: shrink the token block
        # until the grid has about two programs per SM.
        bj = block_j or 128
        bi = block_i or next(
            (blk for blk in (128, 64, 32) if b * triton.cdiv(n, blk) >= 2 * _sm_count(entropy.device)), 32
        )
    _keep_flags_kernel[(triton.cdiv(n, bi), b)](entropy, flags, n, n_keep, *entropy.stride(), BLOCK_I=bi, BLOCK_J=bj)
    return flags


def topk_keep_forward(
    x: torch.Tensor, entropy: torch.Tensor, n_keep: int, *, method: str = "auto",
    block_i: int | None = None, block_d: int | None = None, block_prefix: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the n_keep highest-entropy tokens per image (see module docstring); no autograd.

    Args:
        x: (B, n, D) tokens, any strides; entropy: (B, n) any float dtype (compared as is);
        n_keep: 1 <= n_keep <= n; method: "auto" | "count" | "sort" (see :func:`keep_flags`).

    Returns:
        keep_idx (B, n_keep) int64 ascending, pause_idx (B, n - n_keep) int64 ascending,
        kept (B, n_keep, D) contiguous.
    """
    if x.dim() != 3:
        raise ValueError(f"topk_keep: x must be (B, n, D), got shape {tuple(x.shape)}")
    b, n, d = x.shape
    if entropy.shape != (b, n):
        raise ValueError(f"topk_keep: entropy must be ({b}, {n}), got {tuple(entropy.shape)}")
    if not 1 <= n_keep <= n:
        raise ValueError(f"n_keep must be in [1, {n}], got {n_keep}")
    check_device(x, entropy)
    flags = keep_flags(entropy, n_keep, method=method)
    keep_idx = torch.empty((b, n_keep), dtype=torch.int64, device=x.device)
    pause_idx = torch.empty((b, n - n_keep), dtype=torch.int64, device=x.device)
    kept = torch.empty((b, n_keep, d), dtype=x.dtype, device=x.device)
    if b == 0 or n == 0:
        return keep_idx, pause_idx, kept
    bi = block_i or (64 if INTERPRET else 32)
    bd = block_d or pow2_at_least(d, hi=256 if INTERPRET else 128)
    prefix = block_prefix or max(bi, min(1024, pow2_at_least(n)))
    _compact_kernel[(triton.cdiv(n, bi), b)](
        flags, x, keep_idx, pause_idx, kept, n, d, n_keep, n - n_keep, *x.stride(), BLOCK_I=bi, BLOCK_D=bd, PREFIX=prefix
    )
    return keep_idx, pause_idx, kept
