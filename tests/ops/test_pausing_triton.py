"""Triton pausing kernels against the pure-PyTorch reference.

On CPU they run under the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1
before triton is imported); on a CUDA machine without the interpreter they run compiled.
Shapes are small because the interpreter executes every program in numpy.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed")

from adaseg.ops import reference  # noqa: E402
from adaseg.ops.reference import num_kept  # noqa: E402
from adaseg.ops.triton import _common  # noqa: E402
from adaseg.ops.triton import entropy as tr_entropy  # noqa: E402
from adaseg.ops.triton import library as lib  # noqa: E402
from adaseg.ops.triton import rows as tr_rows  # noqa: E402
from adaseg.ops.triton import topk as tr_topk  # noqa: E402

if not _common.INTERPRET and not torch.cuda.is_available():
    pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1 (set by tests/conftest.py)", allow_module_level=True)

DEVICE = "cpu" if _common.INTERPRET else "cuda"
TOL = {torch.float32: 2e-5, torch.float16: 1e-4, torch.bfloat16: 1e-4}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _decoder(c: int, d: int, dtype, seed: int, scale: float = 3.0):
    g = _gen(seed)
    w = torch.randn(c, d, generator=g) * scale / math.sqrt(d)
    b = torch.randn(c, generator=g)
    return w.to(DEVICE, dtype), b.to(DEVICE, dtype)


# ------------------------------------------------------------------------------ entropy


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "b,n,d,c,blocks",
    [
        (2, 37, 24, 19, {}),  # Cityscapes classes, odd N
        (1, 50, 70, 150, {"block_m": 16, "block_c": 16, "block_d": 16}),  # many class and D blocks
        (3, 17, 48, 133, {"block_m": 32, "block_c": 64, "block_d": 32}),  # COCO classes
        (2, 5, 1024, 257, {}),  # D = 1024, C above 256 (two class blocks of 256)
        (1, 3, 16, 1, {}),  # one class: entropy 0
    ],
)
def test_aux_entropy_matches_reference(b, n, d, c, blocks, dtype):
    x = (torch.randn(b, n, d, generator=_gen(0)) * 2).to(DEVICE, dtype)
    w, bias = _decoder(c, d, dtype, seed=1)
    got = tr_entropy.aux_entropy(x, w, bias, **blocks)
    # Same (rounded) inputs, evaluated in float64: only the kernel's float32 arithmetic differs.
    want = reference.aux_entropy(x.double(), w.double(), bias.double())
    assert got.dtype == torch.float32 and got.shape == (b, n)
    torch.testing.assert_close(got.double(), want, rtol=TOL[dtype], atol=TOL[dtype])


def test_aux_entropy_online_softmax_rescales_across_class_blocks():
    # Large logits whose maximum sits in a late class block: without the rescaling of s and t
    # the sums would overflow or mix different reference maxima.
    b, n, d, c = 2, 19, 32, 100
    x = torch.randn(b, n, d, generator=_gen(2)).to(DEVICE)
    w, bias = _decoder(c, d, torch.float32, seed=3, scale=60.0)
    bias[-5:] += 40.0
    got = tr_entropy.aux_entropy(x, w, bias, block_m=16, block_c=16, block_d=16)
    want = reference.aux_entropy(x.double(), w.double(), bias.double())
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_aux_entropy_strided_and_mixed_dtype_inputs():
    b, n, d, c = 3, 21, 40, 19
    base = torch.randn(n, b, d, generator=_gen(4)).to(DEVICE, torch.bfloat16)
    x = base.transpose(0, 1)  # (B, N, D) view, not contiguous
    w, bias = _decoder(c, d, torch.float32, seed=5)  # fp32 decoder on bf16 tokens
    got = tr_entropy.aux_entropy(x, w, bias)
    want = reference.aux_entropy(x.double(), w.double(), bias.double())
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_aux_entropy_has_no_graph_and_rejects_bad_input():
    x = torch.randn(1, 4, 16, device=DEVICE, requires_grad=True)
    w, bias = _decoder(5, 16, torch.float32, seed=6)
    assert not tr_entropy.aux_entropy(x, w, bias).requires_grad
    with pytest.raises(ValueError, match=r"weight must be \(C, 16\)"):
        tr_entropy.aux_entropy(x, w[:, :8], bias)
    with pytest.raises(TypeError, match="float64"):
        tr_entropy.aux_entropy(x.double(), w.double(), bias.double())
    with pytest.raises(ValueError, match="power of two"):
        tr_entropy.aux_entropy(x, w, bias, block_m=24)


# ------------------------------------------------------------------------------ top-k keep


def _entropy_values(b: int, n: int, kind: str, seed: int) -> torch.Tensor:
    g = _gen(seed)
    if kind == "ties":  # few distinct values: the lower-index rule decides most picks
        h = torch.randint(0, 4, (b, n), generator=g).float()
    elif kind == "special":  # NaN ranks first (as in torch.sort), -inf last, +-0 tie
        h = torch.rand(b, n, generator=g)
        h[:, ::5] = float("nan")
        h[:, 1::7] = float("-inf")
        h[:, 2::6] = -0.0
        h[:, 3::6] = 0.0
    else:
        h = torch.rand(b, n, generator=g)
    return h.to(DEVICE)


@pytest.mark.parametrize("method", ["count", "sort"])
@pytest.mark.parametrize(
    "b,n,d,n_keep",
    [
        (2, 37, 24, num_kept(37, 0.99)),  # n_keep = 1
        (2, 37, 24, num_kept(37, 0.03)),  # n_keep = N - 1
        (3, 130, 20, num_kept(130, 0.4)),  # N not a multiple of the block, several blocks
        (1, 1, 8, 1),
        (2, 64, 16, 64),  # nothing paused: empty pause_idx
    ],
)
@pytest.mark.parametrize("kind", ["random", "ties", "special"])
def test_topk_keep_identical_to_reference(b, n, d, n_keep, method, kind):
    x = torch.randn(b, n, d, generator=_gen(7)).to(DEVICE)
    h = _entropy_values(b, n, kind, seed=8)
    kept, keep_idx, pause_idx = lib.topk_keep(x, h, n_keep, method)
    got = (keep_idx, pause_idx, kept)
    want = reference.topk_keep(x, h, n_keep)
    for name, g, w in zip(("keep_idx", "pause_idx", "kept"), got, want):
        assert g.dtype == w.dtype and torch.equal(g, w), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_topk_keep_half_tokens_and_half_entropy(dtype):
    b, n, d = 2, 45, 12
    x = torch.randn(b, n, d, generator=_gen(9)).to(DEVICE, dtype)
    h = torch.rand(b, n, generator=_gen(10)).to(DEVICE, dtype)  # many ties after rounding
    kept, keep_idx, pause_idx = lib.topk_keep(x, h, 20, "auto")
    for got, want in zip((keep_idx, pause_idx, kept), reference.topk_keep(x, h, 20)):
        assert torch.equal(got, want)


def test_topk_keep_small_blocks_and_strided_tokens():
    b, n, d = 2, 75, 40
    x = torch.randn(b, d, n, generator=_gen(11)).to(DEVICE).transpose(1, 2)
    h = _entropy_values(b, n, "ties", seed=12)
    want = reference.topk_keep(x, h, 31)
    # block_prefix 16 < 48: the kept-before count of later blocks takes several masked steps
    for prefix in (16, 32, None):
        got = tr_topk.topk_keep_forward(x, h, 31, block_i=16, block_d=16, block_prefix=prefix)
        for g, w in zip(got, want):
            assert torch.equal(g, w)


def test_topk_keep_rejects_bad_n_keep():
    x = torch.randn(1, 6, 4, device=DEVICE)
    with pytest.raises(ValueError, match=r"n_keep must be in \[1, 6\]"):
        tr_topk.topk_keep_forward(x, torch.rand(1, 6, device=DEVICE), 0)


def test_fused_entropy_then_topk_matches_reference_in_fp32():
    # Entropies well apart at the keep boundary, so both pipelines must pick the same tokens.
    b, n, d, c = 2, 96, 32, 19
    x = torch.randn(b, n, d, generator=_gen(13)).to(DEVICE) * torch.linspace(0.1, 3, n, device=DEVICE)[:, None]
    w, bias = _decoder(c, d, torch.float32, seed=14)
    ref_h = reference.aux_entropy(x, w, bias)
    n_keep = num_kept(n, 0.4)
    top = ref_h.sort(dim=1, descending=True).values
    assert (top[:, n_keep - 1] - top[:, n_keep]).min() > 1e-4, "test data must separate the boundary"
    kept, keep_idx, pause_idx = lib.topk_keep(x, lib.aux_entropy(x, w, bias), n_keep, "auto")
    for g, want in zip((keep_idx, pause_idx, kept), reference.topk_keep(x, ref_h, n_keep)):
        assert torch.equal(g, want)


# ------------------------------------------------------------------------------ autograd


def test_topk_keep_gradient_matches_reference():
    b, n, d = 2, 33, 10
    x = torch.randn(b, n, d, generator=_gen(15), dtype=torch.float64).to(DEVICE).requires_grad_()
    h = _entropy_values(b, n, "random", seed=16)
    up = torch.randn(b, 13, d, generator=_gen(17), dtype=torch.float64).to(DEVICE)
    (g_tr,) = torch.autograd.grad((lib.topk_keep(x, h, 13, "auto")[0] * up).sum(), x)
    (g_ref,) = torch.autograd.grad((reference.topk_keep(x, h, 13)[2] * up).sum(), x)
    assert torch.equal(g_tr, g_ref)
    # gradcheck perturbs every element (two kernel launches each): keep it tiny.
    xs, hs = x[:1, :5, :2].detach().clone().requires_grad_(), h[:1, :5]
    assert torch.autograd.gradcheck(lambda t: lib.topk_keep(t, hs, 3, "count")[0], (xs,))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_gather_tokens_forward_and_gradient_with_repeated_indices(dtype):
    b, n, d = 2, 19, 9
    x = torch.randn(b, n, d, generator=_gen(18)).to(DEVICE, dtype).requires_grad_()
    idx = torch.randint(0, n, (b, 25), generator=_gen(19)).to(DEVICE)  # repeats on purpose
    got = lib.gather_rows(x, idx)
    want = reference.gather_tokens(x, idx)
    assert torch.equal(got, want)
    up = torch.randn(got.shape, generator=_gen(20)).to(DEVICE, dtype)
    (g_tr,) = torch.autograd.grad((got * up).sum(), x)
    (g_ref,) = torch.autograd.grad((want * up).sum(), x)
    torch.testing.assert_close(g_tr, g_ref)
    if dtype == torch.float64:
        xs, idxs = x[:, :4, :2].detach().clone().requires_grad_(), idx[:, :5] % 4
        assert torch.autograd.gradcheck(lambda t: lib.gather_rows(t, idxs), (xs,))


@pytest.mark.parametrize("tokens_dtype", [torch.float64, torch.float32])
def test_assemble_forward_and_gradients(tokens_dtype):
    b, n, d, k = 2, 23, 7, 9
    base = torch.randn(b, n, d, generator=_gen(21), dtype=torch.float64).to(DEVICE).requires_grad_()
    idx = torch.stack([torch.randperm(n, generator=_gen(22 + i))[:k] for i in range(b)]).to(DEVICE)
    tokens = torch.randn(b, k, d, generator=_gen(24)).to(DEVICE, tokens_dtype).requires_grad_()
    got = lib.assemble(base, idx, tokens)
    want = reference.assemble(base, idx, tokens)
    assert got.dtype == base.dtype and torch.equal(got, want)
    up = torch.randn(b, n, d, generator=_gen(25), dtype=torch.float64).to(DEVICE)
    g_tr = torch.autograd.grad((got * up).sum(), (base, tokens))
    g_ref = torch.autograd.grad((want * up).sum(), (base, tokens))
    for g, r in zip(g_tr, g_ref):
        assert g.dtype == r.dtype and torch.equal(g, r)
    if tokens_dtype == torch.float64:
        bs = base[:, :5, :2].detach().clone().requires_grad_()
        ts = tokens[:, :2, :2].detach().clone().requires_grad_()
        idxs = torch.tensor([[4, 1], [0, 2]], device=DEVICE)
        assert torch.autograd.gradcheck(lambda bb, tt: lib.assemble(bb, idxs, tt), (bs, ts))


def test_write_rows_in_place_gradients():
    # buffer <- x rows (src_idx -> dst_idx), twice, then the rest: vs out-of-place reference scatters.
    b, n, d = 2, 16, 5
    x = torch.randn(b, n, d, generator=_gen(26), dtype=torch.float64).to(DEVICE).requires_grad_()
    perm = torch.stack([torch.randperm(n, generator=_gen(27 + i)) for i in range(b)]).to(DEVICE)
    src1, dst1 = perm[:, :4], perm[:, 4:8]  # rows of x to rows of the buffer
    rest_dst = torch.cat([perm[:, :4], perm[:, 8:]], 1)
    y = x * 2

    buf = torch.zeros(b, n, d, dtype=torch.float64, device=DEVICE)
    buf = lib.WriteRows.apply(buf, y, src1, dst1)
    buf = lib.WriteRows.apply(buf, y[:, :12], None, rest_dst)

    ref = torch.zeros(b, n, d, dtype=torch.float64, device=DEVICE)
    ref = reference.assemble(ref, dst1, reference.gather_tokens(y, src1))
    ref = reference.assemble(ref, rest_dst, y[:, :12])
    assert torch.equal(buf, ref)
    up = torch.randn(b, n, d, generator=_gen(29), dtype=torch.float64).to(DEVICE)
    (g_tr,) = torch.autograd.grad((buf * up).sum(), x, retain_graph=True)
    (g_ref,) = torch.autograd.grad((ref * up).sum(), x)
    assert torch.equal(g_tr, g_ref)


def test_move_rows_rejects_bad_index():
    dst = torch.zeros(2, 4, 3, device=DEVICE)
    with pytest.raises(ValueError, match="dst_idx must be int64"):
        tr_rows.move_rows(dst, torch.ones(2, 2, 3, device=DEVICE), dst_idx=torch.zeros(2, 2, dtype=torch.int32, device=DEVICE))


def test_interpreter_flag_matches_environment():
    # The kernels were decorated under the conftest's TRITON_INTERPRET; the flag must agree,
    # since the dispatcher decides CPU support from it.
    assert _common.INTERPRET == (os.environ.get("TRITON_INTERPRET") == "1")


@pytest.mark.parametrize("c,d,widest_c", [(19, 192, 32), (150, 384, 256), (133, 256, 256), (5, 8, 16)])
def test_autotune_prune_keeps_tiles_within_the_problem(c, d, widest_c):
    kept = tr_entropy._prune(tr_entropy._CONFIGS, {"C": c, "D": d})
    assert kept and max(cfg.kwargs["BLOCK_C"] for cfg in kept) == widest_c
    if d >= 16:
        assert all(cfg.kwargs["BLOCK_D"] <= triton.next_power_of_2(d) for cfg in kept)


# ------------------------------------------------------------------------------ registered ops


def _opcheck_cases():
    g = _gen(40)
    x = torch.randn(2, 9, 4, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_()
    idx = torch.stack([torch.randperm(9, generator=_gen(41 + i))[:4] for i in range(2)]).to(DEVICE)
    tokens = torch.randn(2, 4, 4, generator=g, dtype=torch.float64).to(DEVICE).requires_grad_()
    h = torch.rand(2, 9, generator=g).to(DEVICE)
    w, b = _decoder(5, 4, torch.float32, seed=42)
    return [
        ("aux_entropy", lib.aux_entropy, (x.detach().float(), w, b)),
        ("gather_rows", lib.gather_rows, (x, idx)),
        ("scatter_rows", lib.scatter_rows, (tokens, idx, 9)),
        ("zero_rows", lib.zero_rows, (x, idx)),
        ("assemble", lib.assemble, (x, idx, tokens)),
        ("topk_keep", lib.topk_keep, (x, h, 5, "count")),
    ]


@pytest.mark.parametrize("case", range(6), ids=[c[0] for c in _opcheck_cases()])
def test_registered_ops_pass_opcheck(case):
    # Schema, fake (shape-only) kernels, autograd registration, AOT dispatch.
    _, op, args = _opcheck_cases()[case]
    torch.library.opcheck(op, args)


def test_scatter_and_zero_rows_match_reference():
    b, n, d = 2, 11, 3
    x = torch.randn(b, n, d, generator=_gen(43)).to(DEVICE)
    idx = torch.stack([torch.randperm(n, generator=_gen(44 + i))[:5] for i in range(b)]).to(DEVICE)
    src = torch.randn(b, 5, d, generator=_gen(46)).to(DEVICE)
    assert torch.equal(lib.scatter_rows(src, idx, n), reference.assemble(torch.zeros_like(x), idx, src))
    assert torch.equal(lib.zero_rows(x, idx), reference.assemble(x, idx, torch.zeros_like(src)))
