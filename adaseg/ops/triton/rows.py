"""Row moves between (B, *, D) token tensors: gather, scatter, gather-scatter, zero.

One kernel does all four: program (block of rows r, image b) copies
``src[b, src_idx[b, r]] -> dst[b, dst_idx[b, r]]`` (either index map may be the identity,
and with no source it writes zeros), D in BLOCK_D slices. Each moved row is read once and
written once, so these run at copy bandwidth. :mod:`adaseg.ops.triton.library` builds the
registered ops (gather, scatter, zero rows, assemble, the assembler's in-place write) on it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from adaseg.ops.triton._common import INTERPRET, check_device, pow2_at_least


@triton.jit
def _move_rows_kernel(
    src_ptr, dst_ptr, src_idx_ptr, dst_idx_ptr,
    n_moves, D,
    ssb, ssn, ssd, sdb, sdn, sdd, sib, sir, tib, tir,
    HAS_SRC: tl.constexpr, HAS_SRC_IDX: tl.constexpr, HAS_DST_IDX: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    b = tl.program_id(1).to(tl.int64)
    r_ok = r < n_moves
    r64 = r.to(tl.int64)
    if HAS_DST_IDX:
        dst_row = tl.load(dst_idx_ptr + b * tib + r64 * tir, mask=r_ok, other=0)
    else:
        dst_row = r64
    dst_rows = dst_ptr + b * sdb + dst_row * sdn
    if HAS_SRC:
        if HAS_SRC_IDX:
            src_row = tl.load(src_idx_ptr + b * sib + r64 * sir, mask=r_ok, other=0)
        else:
            src_row = r64
        src_rows = src_ptr + b * ssb + src_row * ssn
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        ok = r_ok[:, None] & (ds < D)[None, :]
        if HAS_SRC:
            v = tl.load(src_rows[:, None] + ds[None, :] * ssd, mask=ok)
        else:
            v = tl.zeros((BLOCK_R, BLOCK_D), tl.float32)
        tl.store(dst_rows[:, None] + ds[None, :] * sdd, v.to(dst_ptr.dtype.element_ty), mask=ok)


def move_rows(
    dst: torch.Tensor,
    src: torch.Tensor | None,
    *,
    src_idx: torch.Tensor | None = None,
    dst_idx: torch.Tensor | None = None,
    block_r: int | None = None,
    block_d: int | None = None,
) -> torch.Tensor:
    """In place: ``dst[b, dst_idx[b, r]] = src[b, src_idx[b, r]]`` for r < n (zeros if src is None).

    Args:
        dst: (B, N_dst, D) written in place (any strides); values are cast to its dtype.
        src: (B, N_src, D) or None.
        src_idx: (B, n) int64 rows of ``src``, or None for rows 0..n-1.
        dst_idx: (B, n) int64 rows of ``dst``, or None for rows 0..n-1. Unique per image
            (two writes to one row race).
        n is taken from whichever index is given (else src's rows).

    Returns:
        ``dst``.
    """
    b, _, d = dst.shape
    if src_idx is not None:
        n = src_idx.shape[1]
    elif dst_idx is not None:
        n = dst_idx.shape[1]
    elif src is not None:
        n = src.shape[1]
    else:
        raise ValueError("move_rows: zeroing needs dst_idx")
    for name, idx in (("src_idx", src_idx), ("dst_idx", dst_idx)):
        if idx is not None and (idx.shape != (b, n) or idx.dtype != torch.int64):
            raise ValueError(f"move_rows: {name} must be int64 of shape ({b}, {n}), got {idx.dtype} {tuple(idx.shape)}")
    if src is not None and (src.shape[0] != b or src.shape[2] != d):
        raise ValueError(f"move_rows: src must be ({b}, *, {d}), got {tuple(src.shape)}")
    check_device(*[t for t in (dst, src, src_idx, dst_idx) if t is not None])
    if b == 0 or n == 0 or d == 0:
        return dst
    # Rows are short (D <= ~1k): a 2D tile of many rows keeps enough bytes in flight.
    bd = block_d or pow2_at_least(d, hi=256 if INTERPRET else 128)
    br = block_r or (64 if INTERPRET else max(1, 4096 // bd))
    dummy = dst  # stands in for absent pointers; never dereferenced (constexpr-pruned)
    s = src if src is not None else dummy
    si = src_idx if src_idx is not None else dummy
    ti = dst_idx if dst_idx is not None else dummy
    si_strides = src_idx.stride() if src_idx is not None else (0, 0)
    ti_strides = dst_idx.stride() if dst_idx is not None else (0, 0)
    _move_rows_kernel[(triton.cdiv(n, br), b)](
        s, dst, si, ti, n, d,
        *(s.stride() if src is not None else (0, 0, 0)), *dst.stride(), *si_strides, *ti_strides,
        HAS_SRC=src is not None, HAS_SRC_IDX=src_idx is not None, HAS_DST_IDX=dst_idx is not None,
        BLOCK_R=br, BLOCK_D=bd,
    )
    return dst


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, N, D), (B, n) -> (B, n, D) contiguous, no autograd."""
    out = torch.empty((x.shape[0], idx.shape[1], x.shape[2]), dtype=x.dtype, device=x.device)
    return move_rows(out, x, src_idx=idx)
