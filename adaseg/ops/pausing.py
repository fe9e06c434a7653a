"""Dispatcher for patch pausing (PAUMER): auxiliary entropy, top-k keep, gather, assembly.

Backend choice, explicit and logged once per op:

* ``ADASEG_PAUSE_BACKEND=reference`` -> the pure-PyTorch reference (:mod:`adaseg.ops.reference`).
* ``ADASEG_PAUSE_BACKEND=triton`` -> the Triton kernels (:mod:`adaseg.ops.triton`); they need
  CUDA tensors, or CPU tensors under the Triton interpreter (``TRITON_INTERPRET=1`` set before
  triton is first imported). Anything else raises one clear error.
* unset / ``auto`` -> Triton when every tensor is on CUDA, triton is installed and the dtypes
  are ones the kernels cover; the reference otherwise.

The Triton path goes through registered custom ops (``torch.ops.adaseg_pause.*``, see
:mod:`adaseg.ops.triton.library`), so autograd and fake-tensor tracing see them. Triton is
imported only once it is chosen, so ``import adaseg`` works where triton is absent.
Shapes and semantics are exactly those of :mod:`adaseg.ops.reference`; the only deliberate
difference is that :func:`aux_entropy` never builds an autograd graph (the entropy only
selects tokens, so both backends return it detached).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator

import torch

from adaseg.choices import PAUSE_BACKEND_ENV as BACKEND_ENV, PAUSE_BACKENDS
from adaseg.ops import reference
from adaseg.ops.reference import num_kept

__all__ = [
    "aux_entropy",
    "topk_keep",
    "assemble",
    "gather_tokens",
    "num_kept",
    "PatchAssembler",
    "select_backend",
    "BACKEND_ENV",
    "lean",
    "lean_enabled",
    "write_rows",
]

_ENTROPY_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_log = logging.getLogger(__name__)
_logged: set[tuple[str, str]] = set()
_lean = True


def lean_enabled() -> bool:
    """Whether inference (no autograd) pause stages take the lean path of
    :mod:`adaseg.ops.pause_stage` (the default) rather than the registered ops."""
    return _lean


@contextlib.contextmanager
def lean(enabled: bool) -> Iterator[None]:
    """Within the block, inference pause stages and assembler writes take the lean path
    (True) or the registered ops and this module's dispatch (False: what training runs; the
    benchmarks' "reference ops" arm)."""
    global _lean
    before, _lean = _lean, bool(enabled)
    try:
        yield
    finally:
        _lean = before


def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _triton_interprets() -> bool:
    """Whether the kernels are (or, once imported, will be) built for the interpreter."""
    common = sys.modules.get("adaseg.ops.triton._common")
    if common is not None:
        return common.INTERPRET  # decided when the kernels were decorated
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def explain_backend(op: str, device_type: str, *, triton_dtypes_ok: bool = True) -> tuple[str, str]:
    """(backend, why) for ``op`` on tensors of ``device_type`` ("cpu", "cuda"), no logging.

    What :func:`select_backend` chooses; ``adaseg doctor`` reports it for devices this
    machine may not have. Raises as :func:`select_backend` does for a forced backend that
    cannot run.
    """
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if (forced or "auto") not in PAUSE_BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={os.environ[BACKEND_ENV]!r}: expected 'reference', 'triton' or 'auto'")
    on_cuda = device_type == "cuda"
    if forced == "reference":
        return "reference", f"{BACKEND_ENV}=reference"
    if forced == "triton":
        if not _triton_installed():
            raise RuntimeError(f"{BACKEND_ENV}=triton but triton is not installed (pip install triton)")
        if not on_cuda and not _triton_interprets():
            raise RuntimeError(
                f"{BACKEND_ENV}=triton: {op} got tensors on {device_type}; the Triton kernels need "
                "CUDA tensors, or TRITON_INTERPRET=1 set before triton is imported to run them on CPU"
            )
        return "triton", f"{BACKEND_ENV}=triton"
    if not on_cuda:
        return "reference", "tensors not on CUDA"
    if not _triton_installed():
        return "reference", "triton is not installed"
    if not triton_dtypes_ok:
        return "reference", "dtype not covered by the Triton kernel"
    return "triton", "CUDA tensors"


def select_backend(op: str, *tensors: torch.Tensor, triton_dtypes_ok: bool = True) -> str:
    """``"triton"`` or ``"reference"`` for ``op`` on these tensors (see module docstring).

    ``triton_dtypes_ok`` False makes auto mode pick the reference (e.g. float64 entropy);
    a forced Triton backend still goes to the kernels, which then reject the dtype.
    """
    # Mixed devices count as "not CUDA": the message then lists them all.
    device_type = "cuda" if all(t.is_cuda for t in tensors) else ", ".join(sorted({str(t.device) for t in tensors}))
    backend, why = explain_backend(op, device_type, triton_dtypes_ok=triton_dtypes_ok)
    if (op, backend) not in _logged:
        _logged.add((op, backend))
        _log.info("adaseg pausing: %s uses the %s backend (%s)", op, backend, why)
    return backend


def aux_entropy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(B, N, D), (C, D), (C,) -> (B, N) float32 entropy of softmax(x W^T + b), detached.

    Triton: one fused kernel, no (B, N, C) logits in memory. float64 inputs go to the
    reference (float64 result) unless the Triton backend is forced.
    """
    ok = all(t.dtype in _ENTROPY_DTYPES for t in (x, weight, bias))
    if select_backend("aux_entropy", x, weight, bias, triton_dtypes_ok=ok) == "triton":
        from adaseg.ops.triton import library

        return library.aux_entropy(x.detach(), weight.detach(), bias.detach())
    with torch.no_grad():
        return reference.aux_entropy(x, weight, bias)


def topk_keep(x: torch.Tensor, entropy: torch.Tensor, n_keep: int):
    """(B, n, D), (B, n), n_keep -> keep_idx (B, n_keep), pause_idx (B, n-n_keep), kept (B, n_keep, D).

    Indices are int64 and ascending; among equal entropies the lower index is kept; ``kept``
    is differentiable w.r.t. ``x``.
    """
    if select_backend("topk_keep", x, entropy) == "triton":
        from adaseg.ops.triton import library

        kept, keep_idx, pause_idx = library.topk_keep(x, entropy.detach(), int(n_keep), "auto")
        return keep_idx, pause_idx, kept
    return reference.topk_keep(x, entropy, n_keep)


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, N, D), (B, n) int64 -> (B, n, D) rows of ``x`` at ``idx`` (differentiable w.r.t. x)."""
    if select_backend("gather_tokens", x, idx) == "triton":
        from adaseg.ops.triton import library

        _check_index(idx, x.shape[0], x.shape[1], "gather_tokens")
        return library.gather_rows(x, idx)
    return reference.gather_tokens(x, idx)


def assemble(base: torch.Tensor, idx: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, D), (B, n), (B, n, D) -> (B, N, D) copy of ``base`` with rows idx replaced by tokens.

    ``idx`` must be unique per image; differentiable w.r.t. ``base`` and ``tokens``.
    """
    if select_backend("assemble", base, idx, tokens) == "triton":
        from adaseg.ops.triton import library

        _check_index(idx, base.shape[0], base.shape[1], "assemble")
        if tokens.dim() != 3 or tokens.shape != (*idx.shape, base.shape[2]):
            raise ValueError(f"assemble: tokens must be {(*idx.shape, base.shape[2])}, got {tuple(tokens.shape)}")
        return library.assemble(base, idx, tokens)
    return reference.assemble(base, idx, tokens)


def write_rows(buf: torch.Tensor, x: torch.Tensor, src_idx: torch.Tensor | None, dst_idx: torch.Tensor) -> torch.Tensor:
    """``buf[b, dst_idx[b, r]] = x[b, src_idx[b, r]]`` in place, without autograd (inference):
    what :class:`PatchAssembler` does to file paused rows, for a caller with its own buffer
    (the benchmarks). ``buf`` (b, N, D) contiguous; ``x`` (b, n, D); ``src_idx`` (b, m) or
    None (all n rows); ``dst_idx`` (b, m). The lean path (:func:`lean_enabled`) moves the rows
    with one ``gather`` and one ``index_copy_``; otherwise the backend's op does. Returns ``buf``.
    """
    asm = PatchAssembler(buf, values=False)
    asm._owned = True
    asm._write(x, src_idx, dst_idx)
    return asm._buffer


def _check_index(idx: torch.Tensor, batch: int, n_rows: int, op: str) -> None:
    # The kernels trust their indices (an out-of-range one would touch foreign memory).
    if idx.dim() != 2 or idx.shape[0] != batch or idx.dtype != torch.int64:
        raise ValueError(f"{op}: idx must be int64 of shape ({batch}, n), got {idx.dtype} {tuple(idx.shape)}")
    # Value checks cost a device sync per call, too much inside an encoder loop on a GPU,
    # where indices come from topk_keep and are in range by construction; on CPU (the
    # interpreter, i.e. tests) they are checked.
    if idx.is_cuda:
        return
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_rows):
        raise IndexError(f"{op}: idx values must be in [0, {n_rows}), got [{int(idx.min())}, {int(idx.max())}]")


class PatchAssembler:
    """PAUMER's patch assembler: ONE (b, N, D) buffer for the token map of the images still
    running, across any number of pause stages and exits.

    The assembler keeps the *active* tokens (b, n, D) and their original rows ``positions``
    (b, n); the buffer holds the paused tokens at their rows. Before the first pause the
    active tokens ARE the map (no buffer of its own); :meth:`drop_rows` drops the rows of
    images that have exited. Two kinds of encoder:

    * ``values=True`` (deformable attention: paused tokens remain attention values): the map
      is kept current, the updated rows written back after every layer (:meth:`update`), and
      :meth:`full` is the map itself;
    * ``values=False`` (ViT: paused tokens leave attention): the buffer receives the paused
      rows once, at their pause; :meth:`full` adds the active rows at exits and recordings.

    Without autograd every write is in place (the Triton ``WriteRows`` kernel on CUDA,
    ``scatter_`` otherwise): no full copy of the map per layer or per stage (the paper's
    Appendix A keeps one per stage). A tensor something else may still read (a layer output
    under autograd, a map handed out by :meth:`full` under autograd or by :meth:`share`) is
    copied once before its first write (copy on write). Under autograd a ``values=False``
    assembler builds PAUMER's out-of-place graph (paused rows assembled at each pause, the
    full map assembled from them at each exit), so training gradients are those of Appendix A.

    Per forward pass::

        asm = PatchAssembler(x, values=True)         # x: (B, N, D), nothing paused yet
        asm.update(layer(asm.active, values=asm.full()))
        asm.pause(kept=..., kept_at=..., paused_local=..., paused_at=...)   # a pause selection
        ...                                          # more layers / pause stages / drop_rows
        out = asm.share()                            # (b, N, D), every token in place
    """

    def __init__(self, tokens: torch.Tensor, *, values: bool):
        if tokens.dim() != 3:
            raise ValueError(f"PatchAssembler: tokens must be (B, N, D), got {tuple(tokens.shape)}")
        self.values = values
        self._active = tokens  # (b, n, D)
        self._positions: torch.Tensor | None = None  # (b, n) rows of the active tokens; None: all, in order
        self._buffer = tokens  # (b, N, D); is the active tensor itself while nothing is paused
        self._current = True  # the buffer holds the current active tokens at their rows
        self._owned = False  # the buffer may be written in place
        self._flat: tuple[torch.Tensor, torch.Tensor] | None = None  # (dst_idx, its rows in the (b * N, D) view)

    @property
    def active(self) -> torch.Tensor:
        """(b, n, D) the tokens still being updated."""
        return self._active

    @property
    def positions(self) -> torch.Tensor | None:
        """(b, n) int64 original row of each active token (ascending), or None: every row, in order."""
        return self._positions

    def update(self, x: torch.Tensor) -> None:
        """The active tokens after a layer: (b, n, D), same shape as :attr:`active`."""
        if x.shape != self._active.shape:
            raise ValueError(f"PatchAssembler.update: x must be {tuple(self._active.shape)}, got {tuple(x.shape)}")
        self._active = x
        if self._positions is None:  # nothing paused: the layer output is the whole map
            # Without autograd nothing else reads a layer's output once the next layer has
            # it, so it becomes the buffer as it is; with autograd it is copied before a write.
            self._buffer, self._current, self._owned = x, True, not torch.is_grad_enabled()
            return
        self._current = False
        if self.values:  # the next layer reads the map: write the updated rows back now
            self._sync()

    def pause(self, *, kept: torch.Tensor, kept_at: torch.Tensor, paused_local: torch.Tensor,
              paused_at: torch.Tensor) -> None:
        """File the paused rows into the buffer; the kept ones stay active.

        Args:
            kept: (b, n_keep, D) the active tokens that stay active.
            kept_at: (b, n_keep) their original rows.
            paused_local: (b, m) indices among the n active tokens of the paused ones.
            paused_at: (b, m) their original rows (n_keep + m == n, a partition).
        """
        b, n = self._active.shape[:2]
        if kept_at.shape[0] != b or paused_at.shape != paused_local.shape or kept_at.shape[1] + paused_at.shape[1] != n:
            raise ValueError(f"PatchAssembler.pause: kept_at {tuple(kept_at.shape)} and paused_at "
                             f"{tuple(paused_at.shape)} must split the {n} active tokens of {b} images")
        if not self.values and torch.is_grad_enabled():
            base = torch.zeros_like(self._active) if self._positions is None else self._buffer
            self._buffer = assemble(base, paused_at, gather_tokens(self._active, paused_local))
            self._current, self._owned = False, False
        elif not self._current:  # the buffer's rows of the pausing tokens are stale
            self._write(self._active, paused_local, paused_at)
        # else: the paused rows are in the buffer already; so are the kept ones (unchanged copies)
        self._active, self._positions = kept, kept_at

    def full(self) -> torch.Tensor:
        """(b, N, D) every token in place: paused ones from the buffer, active ones as they are now.

        Read it, do not keep it (see :meth:`share`): the assembler writes into it later.
        """
        if not self._current and not self.values and torch.is_grad_enabled():
            return assemble(self._buffer, self._positions, self._active)  # out of place, buffer unchanged
        self._sync()
        if torch.is_grad_enabled():  # whatever reads it may save it for backward
            self._owned = False
        return self._buffer

    def share(self) -> torch.Tensor:
        """:meth:`full` for a caller that keeps the tensor (e.g. an exit's output): never written again."""
        out = self.full()
        if out is self._buffer:
            self._owned = False
        return out

    def drop_rows(self, keep: torch.Tensor) -> None:
        """Keep only images ``keep`` (k,) int64 (indices into the current b rows, ascending)."""
        self._active = self._active.index_select(0, keep)
        if self._positions is None:  # the copy just made is the whole map
            self._buffer, self._current, self._owned = self._active, True, True
            return
        self._positions = self._positions.index_select(0, keep)
        self._buffer = self._buffer.index_select(0, keep)
        self._owned = True

    def _sync(self) -> None:
        """Write the active rows into the buffer if they are not there yet."""
        if not self._current:
            self._write(self._active, None, self._positions)
            self._current = True

    def _write(self, x: torch.Tensor, src_idx: torch.Tensor | None, dst_idx: torch.Tensor) -> None:
        """``buffer[b, dst_idx[b, r]] = x[b, src_idx[b, r]]`` in place (autograd-aware)."""
        if not self._owned:  # copy on write: never modify a tensor someone else may read
            self._buffer = self._buffer.clone(memory_format=torch.contiguous_format)
            self._owned = True
        buf = self._buffer
        if _lean and not torch.is_grad_enabled() and buf.is_contiguous():
            # the lean inference path: no dispatch; the flat rows of the active positions are
            # computed once per pause stage, not once per layer
            b, n_rows, d = buf.shape
            if self._flat is None or self._flat[0] is not dst_idx:
                offsets = torch.arange(0, b * n_rows, n_rows, device=dst_idx.device).unsqueeze(1)
                self._flat = (dst_idx, (dst_idx + offsets).reshape(-1))
            rows = x if src_idx is None else torch.gather(x, 1, src_idx.unsqueeze(-1).expand(*src_idx.shape, d))
            buf.view(b * n_rows, d).index_copy_(0, self._flat[1], rows.reshape(-1, d).to(buf.dtype))
            return
        if select_backend("assemble", buf, x, dst_idx) == "triton":
            from adaseg.ops.triton import library

            self._buffer = library.WriteRows.apply(buf, x, src_idx, dst_idx)
            return
        rows = (x if src_idx is None else reference.gather_tokens(x, src_idx)).to(buf.dtype)
        if (buf.requires_grad or rows.requires_grad) and torch.is_grad_enabled() or not buf.is_contiguous():
            # In-place scatter_ is differentiable: autograd zeroes the overwritten rows' gradient.
            self._buffer = buf.scatter_(1, dst_idx.unsqueeze(-1).expand(*dst_idx.shape, buf.shape[2]), rows)
            return
        # Inference: whole rows of the flattened (b * N, D) map. index_copy_ moves a row at a
        # time where scatter_ looks up an index per element (about 2x faster on CPU).
        b, n_rows, d = buf.shape
        flat = (dst_idx + torch.arange(b, device=dst_idx.device).unsqueeze(1) * n_rows).reshape(-1)
        buf.view(b * n_rows, d).index_copy_(0, flat, rows.reshape(-1, d))
