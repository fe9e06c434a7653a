"""The pausing dispatcher (adaseg.ops.pausing): backend choice and the PatchAssembler.

The Triton backend runs on CPU under the interpreter (tests/conftest.py sets
TRITON_INTERPRET=1); the assembler is checked against PAUMER's Appendix A algorithm
built from the reference ops (one full copy per stage), with autograd (copy on write) and
without (in place).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from adaseg.ops import pausing, reference
from adaseg.ops.reference import num_kept

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
needs_interpreter = pytest.mark.skipif(
    not INTERPRETED or pausing.importlib.util.find_spec("triton") is None,
    reason="the Triton backend on CPU needs triton and TRITON_INTERPRET=1 (tests/conftest.py)",
)
BACKENDS = ["reference", pytest.param("triton", marks=needs_interpreter)]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", pausing.BACKEND_ENV)}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


# ------------------------------------------------------------------------------ backend choice


def test_auto_picks_reference_for_cpu_tensors(monkeypatch):
    monkeypatch.delenv(pausing.BACKEND_ENV, raising=False)
    x = torch.zeros(1, 2, 3)
    assert pausing.select_backend("topk_keep", x) == "reference"
    monkeypatch.setenv(pausing.BACKEND_ENV, "auto")
    assert pausing.select_backend("topk_keep", x) == "reference"


@needs_interpreter
def test_forcing_each_backend(monkeypatch):
    x = torch.zeros(1, 2, 3)
    monkeypatch.setenv(pausing.BACKEND_ENV, "reference")
    assert pausing.select_backend("aux_entropy", x) == "reference"
    monkeypatch.setenv(pausing.BACKEND_ENV, " Triton ")
    assert pausing.select_backend("aux_entropy", x) == "triton"


def test_unknown_backend_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(pausing.BACKEND_ENV, "cuda")
    with pytest.raises(ValueError, match=r"ADASEG_PAUSE_BACKEND='cuda': expected 'reference', 'triton' or 'auto'"):
        pausing.topk_keep(torch.zeros(1, 2, 3), torch.zeros(1, 2), 1)


def test_forced_triton_on_cpu_without_interpreter_fails_clearly():
    code = (
        "import torch\nfrom adaseg.ops import pausing\n"
        "pausing.aux_entropy(torch.zeros(1, 2, 16), torch.zeros(3, 16), torch.zeros(3))\n"
    )
    proc = _run_python(code, ADASEG_PAUSE_BACKEND="triton", TRITON_INTERPRET="0")
    assert proc.returncode != 0
    assert "RuntimeError: ADASEG_PAUSE_BACKEND=triton: aux_entropy got tensors on cpu" in proc.stderr
    assert "TRITON_INTERPRET=1" in proc.stderr


def test_adaseg_imports_and_runs_without_triton():
    # A platform without triton: importing adaseg (and the dispatcher) must work, auto mode
    # must run the reference, and forcing triton must say what is missing.
    code = (
        "import sys\nsys.modules['triton'] = None  # import triton now fails\n"
        "import torch, adaseg, adaseg.ops\nfrom adaseg.ops import pausing, reference\n"
        "x = torch.randn(2, 9, 4); h = torch.rand(2, 9)\n"
        "got = pausing.topk_keep(x, h, 5); want = reference.topk_keep(x, h, 5)\n"
        "assert all(torch.equal(a, b) for a, b in zip(got, want))\n"
        "import os\nos.environ['ADASEG_PAUSE_BACKEND'] = 'triton'\n"
        "try:\n    pausing.topk_keep(x, h, 5)\nexcept RuntimeError as e:\n    print('ERR', e)\n"
        "assert 'triton' not in sys.modules or sys.modules['triton'] is None\n"
    )
    proc = _run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert "ERR ADASEG_PAUSE_BACKEND=triton but triton is not installed" in proc.stdout


def test_float64_entropy_stays_on_reference_in_auto_mode(monkeypatch):
    monkeypatch.delenv(pausing.BACKEND_ENV, raising=False)
    x = torch.randn(1, 5, 8, dtype=torch.float64, requires_grad=True)
    w, b = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    h = pausing.aux_entropy(x, w, b)
    assert h.dtype == torch.float64 and not h.requires_grad
    torch.testing.assert_close(h, reference.aux_entropy(x, w, b).detach())


# ------------------------------------------------------------------------------ ops through the dispatcher


@pytest.mark.parametrize("backend", BACKENDS)
def test_dispatched_ops_match_reference(backend, monkeypatch):
    monkeypatch.setenv(pausing.BACKEND_ENV, backend)
    b, n, d, c = 2, 27, 16, 19
    x = torch.randn(b, n, d, generator=_gen(0))
    w, bias = torch.randn(c, d, generator=_gen(1)), torch.randn(c, generator=_gen(2))
    h = pausing.aux_entropy(x, w, bias)
    torch.testing.assert_close(h, reference.aux_entropy(x, w, bias), rtol=2e-5, atol=2e-5)
    n_keep = num_kept(n, 0.3)
    for got, want in zip(pausing.topk_keep(x, h, n_keep), reference.topk_keep(x, h, n_keep)):
        assert torch.equal(got, want)
    idx = torch.randint(0, n, (b, 6), generator=_gen(3))
    assert torch.equal(pausing.gather_tokens(x, idx), reference.gather_tokens(x, idx))
    mask = x[..., :1] > 0  # bool rows, as models gather padding masks
    assert torch.equal(pausing.gather_tokens(mask, idx), reference.gather_tokens(mask, idx))
    uniq = torch.stack([torch.randperm(n, generator=_gen(4 + i))[:6] for i in range(b)])
    tokens = torch.randn(b, 6, d, generator=_gen(9))
    assert torch.equal(pausing.assemble(x, uniq, tokens), reference.assemble(x, uniq, tokens))


@needs_interpreter
def test_triton_backend_checks_indices_on_cpu(monkeypatch):
    monkeypatch.setenv(pausing.BACKEND_ENV, "triton")
    x = torch.randn(1, 4, 3)
    with pytest.raises(IndexError, match=r"idx values must be in \[0, 4\)"):
        pausing.gather_tokens(x, torch.tensor([[0, 4]]))
    with pytest.raises(ValueError, match="idx must be int64"):
        pausing.assemble(x, torch.tensor([[0, 1]], dtype=torch.int32), torch.randn(1, 2, 3))


# ------------------------------------------------------------------------------ PatchAssembler


def _layer(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """A stand-in encoder layer: changes every active token, differentiably."""
    return x + torch.tanh(x @ m)


def _score(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    # One scorer for both sides, so this test is about selection + assembly only (the
    # entropy kernel has its own tests); float64 tokens keep the gradient comparison exact.
    return reference.aux_entropy(x.detach().float(), weight, bias)


def _paper_assembler(x, weight, bias, ms, n_keeps):
    """PAUMER Appendix A with the reference ops: keep a full copy per stage, assemble backwards."""
    copies, keeps = [], []
    for m, n_keep in zip(ms, n_keeps):
        x = _layer(x, m)
        keep_idx, _, kept = reference.topk_keep(x, _score(x, weight, bias), n_keep)
        copies.append(x)
        keeps.append(keep_idx)
        x = kept
    x = _layer(x, ms[-1])
    for keep_idx, copy in zip(keeps[::-1], copies[::-1]):
        x = reference.assemble(copy, keep_idx, x)
    return x


def _pause(asm, keep_idx, pause_idx, kept):
    """File a topk_keep selection (indices among the active tokens) into the assembler."""
    pos = asm.positions
    kept_at = keep_idx if pos is None else torch.gather(pos, 1, keep_idx)
    paused_at = pause_idx if pos is None else torch.gather(pos, 1, pause_idx)
    asm.pause(kept=kept, kept_at=kept_at, paused_local=pause_idx, paused_at=paused_at)


def _with_assembler(x, weight, bias, ms, n_keeps, values):
    """The same network through the dispatcher and one PatchAssembler buffer."""
    asm = pausing.PatchAssembler(x, values=values)
    for m, n_keep in zip(ms, n_keeps):
        asm.update(_layer(asm.active, m))
        x = asm.active
        keep_idx, pause_idx, kept = pausing.topk_keep(x, _score(x, weight, bias), n_keep)
        _pause(asm, keep_idx, pause_idx, kept)
        assert asm.active.shape[1] == n_keep and torch.equal(asm.positions, asm.positions.sort(dim=1).values)
    asm.update(_layer(asm.active, ms[-1]))
    return asm.full()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("values", [False, True])
@pytest.mark.parametrize("n,ratios", [(31, (0.4, 0.3, 0.5)), (20, (0.95,)), (17, (1 / 17 + 1e-3, 0.5))])
def test_patch_assembler_matches_paper_algorithm(backend, values, n, ratios, monkeypatch):
    monkeypatch.setenv(pausing.BACKEND_ENV, backend)
    b, d, c = 2, 8, 7
    n_keeps, active = [], n
    for r in ratios:
        active = num_kept(active, r)
        n_keeps.append(active)
    x0 = torch.randn(b, n, d, generator=_gen(10), dtype=torch.float64).requires_grad_()
    weight, bias = torch.randn(c, d, generator=_gen(11)), torch.randn(c, generator=_gen(12))
    ms = [torch.randn(d, d, generator=_gen(13 + i), dtype=torch.float64) * 0.3 for i in range(len(ratios) + 1)]
    got = _with_assembler(x0, weight, bias, ms, n_keeps, values)
    want = _paper_assembler(x0, weight, bias, ms, n_keeps)
    assert got.shape == (b, n, d) and torch.equal(got, want)
    with torch.no_grad():  # the in-place path (no copy on write) gives the same map
        assert torch.equal(_with_assembler(x0, weight, bias, ms, n_keeps, values), want)
    up = torch.randn(b, n, d, generator=_gen(20), dtype=torch.float64)
    (g_got,) = torch.autograd.grad((got * up).sum(), x0)
    (g_want,) = torch.autograd.grad((want * up).sum(), x0)
    torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("values", [False, True])
def test_patch_assembler_without_pause_and_misuse(values):
    x = torch.randn(2, 5, 3)
    asm = pausing.PatchAssembler(x, values=values)
    assert asm.full() is x and asm.positions is None  # nothing paused: no buffer of its own
    y = x * 2
    asm.update(y)
    assert asm.full() is y
    with pytest.raises(ValueError, match=r"x must be \(2, 5, 3\)"):
        asm.update(x[:, :3])
    keep_idx, pause_idx, kept = reference.topk_keep(y, torch.rand(2, 5), 3)
    with pytest.raises(ValueError, match="must split the 5 active tokens"):
        asm.pause(kept=kept, kept_at=keep_idx, paused_local=pause_idx[:, :1], paused_at=pause_idx[:, :1])
    _pause(asm, keep_idx, pause_idx, kept)
    full = asm.share()
    assert torch.equal(full, y)
    asm.update(kept + 1)  # a write after share() must not change what share() returned
    assert torch.equal(full, y) and torch.equal(asm.full(), reference.assemble(y, keep_idx, kept + 1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("values", [False, True])
def test_patch_assembler_drops_rows_of_exited_images(backend, values, monkeypatch):
    monkeypatch.setenv(pausing.BACKEND_ENV, backend)
    x = torch.randn(3, 6, 4, generator=_gen(40))
    asm = pausing.PatchAssembler(x, values=values)
    keep_idx, pause_idx, kept = reference.topk_keep(x, torch.rand(3, 6, generator=_gen(41)), 4)
    _pause(asm, keep_idx, pause_idx, kept)
    asm.update(kept * 3)
    want = reference.assemble(x, keep_idx, kept * 3)
    keep = torch.tensor([0, 2])
    asm.drop_rows(keep)
    assert torch.equal(asm.positions, keep_idx[keep]) and torch.equal(asm.active, kept[keep] * 3)
    assert torch.equal(asm.full(), want[keep])
    # dropping before any pause: the map is just the kept rows
    asm = pausing.PatchAssembler(x, values=values)
    asm.drop_rows(torch.tensor([1]))
    assert torch.equal(asm.full(), x[1:2]) and asm.positions is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_patch_assembler_full_view_feeds_later_layers(backend, monkeypatch):
    # Deformable-encoder style: active tokens read every token (paused ones included) through
    # full(), then more tokens pause into the same buffer. Oracle: the full map rebuilt with
    # reference.assemble after every layer (one copy per layer), as Mask2Former's encoder does.
    monkeypatch.setenv(pausing.BACKEND_ENV, backend)
    b, n, d = 2, 14, 4
    x0 = torch.randn(b, n, d, generator=_gen(30), dtype=torch.float64).requires_grad_()
    m = torch.randn(d, d, generator=_gen(31), dtype=torch.float64)
    weight, bias = torch.randn(3, d, generator=_gen(32)), torch.randn(3, generator=_gen(33))

    def layer(active, values):
        return active + 0.1 * torch.tanh(values.mean(1, keepdim=True) @ m) * active

    # oracle
    full, active, pos = x0, x0, torch.arange(n).expand(b, n)
    for n_keep in (9, 4):
        active = layer(active, full)
        full = reference.assemble(full, pos, active)
        keep_idx, _, active = reference.topk_keep(active, _score(active, weight, bias), n_keep)
        pos = torch.gather(pos, 1, keep_idx)
    want = reference.assemble(full, pos, layer(active, full))

    asm = pausing.PatchAssembler(x0, values=True)
    for n_keep in (9, 4):
        asm.update(layer(asm.active, asm.full()))
        active = asm.active
        keep_idx, pause_idx, kept = pausing.topk_keep(active, _score(active, weight, bias), n_keep)
        _pause(asm, keep_idx, pause_idx, kept)
    asm.update(layer(asm.active, asm.full()))
    got = asm.full()

    assert torch.equal(got, want)
    up = torch.randn(b, n, d, generator=_gen(34), dtype=torch.float64)
    (g_got,) = torch.autograd.grad((got * up).sum(), x0)
    (g_want,) = torch.autograd.grad((want * up).sum(), x0)
    torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-12)
