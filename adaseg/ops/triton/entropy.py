"""Fused auxiliary decoder + entropy: H = entropy(softmax(X W^T + b)) without the logits.

PAUMER scores every token with a 1x1 linear decoder and pauses the lowest-entropy ones.
Unfused, that writes and re-reads a (B, N, C) logit tensor (and its softmax) in float32:
for ViT-S at 512x512 with ADE20K's 150 classes that is ~20 MB written and read twice, more
than the tokens themselves. Here each program owns BLOCK_M tokens, walks the classes in
BLOCK_C blocks (an inner loop over D blocks builds the logit block with ``tl.dot`` in
float32) and folds each block into an online softmax-entropy:

    m = running max,  s = sum exp(l - m),  t = sum exp(l - m) * (l - m)
    H = log s - t / s

When the max grows from m to m', both sums are rescaled by a = exp(m - m'):
s' = a s + ..., and, because (l - m') = (l - m) + (m - m'), t' = a (t + (m - m') s) + ...
Only the (B, N) float32 entropy is written.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from adaseg.ops.triton._common import INTERPRET, check_device, pow2_at_least

_SUPPORTED = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _aux_entropy_kernel(
    x_ptr, w_ptr, b_ptr, h_ptr,
    n_rows, N, C, D,
    sxb, sxn, sxd, swc, swd, sbc,
    DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    # Rows are (image, token) pairs; strides make any (B, N, D) layout work without a copy.
    x_rows = x_ptr + (rows64 // N) * sxb + (rows64 % N) * sxn

    m = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    s = tl.zeros((BLOCK_M,), tl.float32)
    t = tl.zeros((BLOCK_M,), tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        col_ok = cols < C
        acc = tl.zeros((BLOCK_M, BLOCK_C), tl.float32)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            d_ok = ds < D
            xt = tl.load(x_rows[:, None] + ds[None, :] * sxd, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            wt = tl.load(w_ptr + cols[None, :] * swc + ds[:, None] * swd, mask=d_ok[:, None] & col_ok[None, :], other=0.0)
            # Casts are no-ops when the input already has DOT_DTYPE; mixed inputs (e.g. bf16
            # tokens, fp32 weight) are widened in registers, never copied in memory.
            acc = tl.dot(xt.to(DOT_DTYPE), wt.to(DOT_DTYPE), acc, input_precision=DOT_PRECISION)
        bias = tl.load(b_ptr + cols * sbc, mask=col_ok, other=0.0).to(tl.float32)
        logits = tl.where(col_ok[None, :], acc + bias[None, :], float("-inf"))
        m_new = tl.maximum(m, tl.max(logits, axis=1))
        # Before the first block m = -inf and s = t = 0: any finite shift keeps them 0,
        # while (m - m_new) itself would turn 0 * -inf into NaN.
        shift = tl.where(m == float("-inf"), 0.0, m - m_new)
        alpha = tl.exp(shift)
        # Padded classes contribute 0 to both sums (z = 0 there avoids 0 * -inf).
        z = tl.where(col_ok[None, :], logits - m_new[:, None], 0.0)
        e = tl.where(col_ok[None, :], tl.exp(z), 0.0)
        t = alpha * (t + shift * s) + tl.sum(e * z, axis=1)
        s = alpha * s + tl.sum(e, axis=1)
        m = m_new
    h = tl.log(s) - t / s
    tl.store(h_ptr + rows64, h, mask=row_ok)


# On a GPU the best tile depends on (C, D) and the device; tune once per (C, D, dtypes).
# Two regimes: small class blocks (little padding of C, but the token tile is re-read from
# L2 once per class block) and one class block covering C <= 256 (tokens read once, padded
# classes multiplied for nothing). Every tl.dot dimension stays >= 16 (tensor cores).
_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_C": bc, "BLOCK_D": bd}, num_warps=w, num_stages=st)
    for bm, bc, bd, w, st in [
        (64, 16, 128, 4, 3),
        (64, 32, 64, 4, 3),
        (64, 64, 64, 4, 3),
        (64, 128, 64, 4, 3),
        (64, 256, 64, 8, 3),
        (128, 16, 128, 4, 3),
        (128, 32, 64, 4, 3),
        (128, 64, 64, 8, 3),
        (128, 128, 64, 8, 3),
        (256, 32, 64, 8, 3),
    ]
]


def _prune(configs, named_args, **_):
    """Drop tiles wider than the problem (a 256-class block for Cityscapes' 19 classes)."""
    c_cap = pow2_at_least(named_args["C"])
    d_cap = pow2_at_least(named_args["D"])
    kept = [cfg for cfg in configs if cfg.kwargs["BLOCK_C"] <= c_cap and cfg.kwargs["BLOCK_D"] <= d_cap]
    return kept or configs[:1]


_aux_entropy_tuned = triton.autotune(configs=_CONFIGS, key=["C", "D"], prune_configs_by={"early_config_prune": _prune})(
    _aux_entropy_kernel
)


def _dot_dtype(x: torch.Tensor, weight: torch.Tensor):
    """The dtype tl.dot multiplies in: the inputs' own half dtype when they agree, else float32.

    The interpreter multiplies with numpy, which has no bfloat16, so there bf16 tiles are
    widened to float32 first; products of bf16 values are exact in float32, so the result
    is the same up to summation order.
    """
    if x.dtype == weight.dtype == torch.float16:
        return tl.float16
    if x.dtype == weight.dtype == torch.bfloat16 and not INTERPRET:
        return tl.bfloat16
    return tl.float32


def aux_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    block_m: int | None = None,
    block_c: int | None = None,
    block_d: int | None = None,
) -> torch.Tensor:
    """Entropy of softmax(x @ weight.T + bias) per token, fused (no logits in memory).

    Args:
        x: (B, N, D) float32/float16/bfloat16 tokens, any strides.
        weight: (C, D) decoder weight; bias: (C,) decoder bias (float32/float16/bfloat16).
        block_m, block_c, block_d: fixed tile sizes (powers of two >= 16); when all are None
            a compiled kernel is autotuned per (C, D), the interpreter uses large tiles.

    Returns:
        (B, N) float32 entropy. No autograd graph: the entropy only selects tokens.
    """
    if x.dim() != 3:
        raise ValueError(f"aux_entropy: x must be (B, N, D), got shape {tuple(x.shape)}")
    b, n, d = x.shape
    if weight.dim() != 2 or weight.shape[1] != d:
        raise ValueError(f"aux_entropy: weight must be (C, {d}), got shape {tuple(weight.shape)}")
    c = weight.shape[0]
    if bias.shape != (c,):
        raise ValueError(f"aux_entropy: bias must be ({c},), got shape {tuple(bias.shape)}")
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t.dtype not in _SUPPORTED:
            raise TypeError(f"aux_entropy (Triton): {name} must be float32/float16/bfloat16, got {t.dtype}")
    check_device(x, weight, bias)
    h = torch.empty((b, n), dtype=torch.float32, device=x.device)
    n_rows = b * n
    if n_rows == 0:
        return h
    if c == 0:
        raise ValueError("aux_entropy: the decoder has no classes (C = 0)")
    dot_dtype = _dot_dtype(x, weight)
    # float32 dots follow PyTorch's switch: with TF32 allowed, plain "tf32"; otherwise
    # "tf32x3" (three TF32 products per term: float32-level accuracy, still on tensor cores,
    # where "ieee" would fall back to FMA units and make the kernel compute-bound). The
    # interpreter multiplies in numpy float32 ("ieee"). Half dots always use tensor cores.
    if dot_dtype != tl.float32:
        precision = "tf32"  # triton's default; irrelevant for fp16/bf16 operands
    elif INTERPRET:
        precision = "ieee"
    elif torch.backends.cuda.matmul.allow_tf32:
        precision = "tf32"
    else:
        precision = "tf32x3"
    args = (x, weight, bias, h, n_rows, n, c, d, *x.stride(), *weight.stride(), bias.stride(0))
    fixed = (block_m, block_c, block_d) != (None, None, None)
    if fixed or INTERPRET:
        bm = block_m or 64
        bc = block_c or pow2_at_least(c, hi=256)
        bd = block_d or pow2_at_least(d, hi=256)
        for name, v in (("block_m", bm), ("block_c", bc), ("block_d", bd)):
            if v < 16 or v & (v - 1):
                raise ValueError(f"aux_entropy: {name} must be a power of two >= 16, got {v}")
        _aux_entropy_kernel[(triton.cdiv(n_rows, bm),)](
            *args, DOT_DTYPE=dot_dtype, DOT_PRECISION=precision, BLOCK_M=bm, BLOCK_C=bc, BLOCK_D=bd
        )
    else:
        grid = lambda meta: (triton.cdiv(n_rows, meta["BLOCK_M"]),)  # noqa: E731
        _aux_entropy_tuned[grid](*args, DOT_DTYPE=dot_dtype, DOT_PRECISION=precision)
    return h


class EntropyLauncher:
    """The fused entropy kernel for one shape, set up once (issue 23's lean pause stage).

    Built for (b, n, D) tokens of one dtype and a (C, D) decoder: checks, the dot dtype and
    precision and the block configuration are decided here (on a GPU by one autotuned launch,
    whose winner is kept), so a call is one kernel launch with no checks and no autotuner,
    writing into ``out`` (b, n) float32. The caller guarantees the shape, dtype and device.
    """

    def __init__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor):
        aux_entropy(x, weight, bias)  # validates the inputs (and, compiled, tunes for (C, D))
        b, n, d = x.shape
        c = weight.shape[0]
        self._n_rows = b * n
        self._dot = _dot_dtype(x, weight)
        if self._dot != tl.float32:
            self._precision = "tf32"
        elif INTERPRET:
            self._precision = "ieee"
        else:
            self._precision = "tf32x3" if not torch.backends.cuda.matmul.allow_tf32 else "tf32"
        best = getattr(_aux_entropy_tuned, "best_config", None)
        if INTERPRET or best is None:
            self._meta = {"BLOCK_M": 64, "BLOCK_C": pow2_at_least(c, hi=256), "BLOCK_D": pow2_at_least(d, hi=256)}
        else:
            self._meta = dict(best.kwargs, num_warps=best.num_warps, num_stages=best.num_stages)
        self._grid = (triton.cdiv(self._n_rows, self._meta["BLOCK_M"]),)
        self._tail = (self._n_rows, n, c, d)

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """(b, n, D) tokens -> ``out`` (b, n) float32 entropy; one launch."""
        _aux_entropy_kernel[self._grid](x, weight, bias, out, *self._tail, *x.stride(), *weight.stride(),
                                        bias.stride(0), DOT_DTYPE=self._dot, DOT_PRECISION=self._precision,
                                        **self._meta)
        return out
