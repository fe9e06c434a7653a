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

import importlib.util
import logging
import os
import sys

import torch

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
]

BACKEND_ENV = "ADASEG_PAUSE_BACKEND"
_ENTROPY_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_log = logging.getLogger(__name__)
_logged: set[tuple[str, str]] = set()


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
    if forced not in ("", "auto", "reference", "triton"):
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
    """PAUMER's patch assembler over any number of pause stages, into ONE (B, N, D) buffer.

    A paused token is written once, when it pauses, straight into its original row of the
    output; the tokens still active at the end are written by :meth:`finish`. No full copy
    of the token map is kept per stage (the paper's Appendix A keeps one per stage).
    Gradients flow from the output to every written token.

    Per forward pass::

        asm = PatchAssembler.for_tokens(x)          # x: (B, N, D) before any pause
        keep_idx, pause_idx, kept = pausing.topk_keep(x, entropy, n_keep)
        asm.pause(x, keep_idx=keep_idx, pause_idx=pause_idx)
        x = kept                                    # (B, n_keep, D) continue with these
        ...                                         # more layers / pause stages
        out = asm.finish(x)                         # (B, N, D), every token in place

    ``keep_idx`` / ``pause_idx`` index the tokens active at that stage (what topk_keep
    returns); the assembler maps them to original positions (:attr:`positions`).
    """

    def __init__(self, *, batch_size: int, n_tokens: int, dim: int, dtype: torch.dtype, device: torch.device | str):
        self.batch_size, self.n_tokens, self.dim = int(batch_size), int(n_tokens), int(dim)
        self.dtype, self.device = dtype, torch.device(device)
        self._positions: torch.Tensor | None = None  # None: identity (nothing paused yet)
        self._buffer: torch.Tensor | None = None  # allocated at the first pause
        self._finished = False

    @classmethod
    def for_tokens(cls, x: torch.Tensor) -> "PatchAssembler":
        """An assembler for the (B, N, D) tokens ``x`` (shape, dtype and device taken from it)."""
        b, n, d = x.shape
        return cls(batch_size=b, n_tokens=n, dim=d, dtype=x.dtype, device=x.device)

    @property
    def positions(self) -> torch.Tensor:
        """(B, n_active) int64: original row of each active token (ascending)."""
        if self._positions is None:
            return torch.arange(self.n_tokens, device=self.device).expand(self.batch_size, -1)
        return self._positions

    @property
    def n_active(self) -> int:
        return self.n_tokens if self._positions is None else self._positions.shape[1]

    def pause(self, x: torch.Tensor, *, keep_idx: torch.Tensor, pause_idx: torch.Tensor) -> None:
        """File the paused rows of the active tokens ``x`` (B, n, D) into the output buffer.

        keep_idx (B, n_keep) and pause_idx (B, n - n_keep) partition 0..n-1 per image.
        """
        self._check_open()
        b, n = self.batch_size, self.n_active
        if x.shape != (b, n, self.dim):
            raise ValueError(f"PatchAssembler.pause: x must be ({b}, {n}, {self.dim}), got {tuple(x.shape)}")
        if keep_idx.shape[0] != b or pause_idx.shape[0] != b or keep_idx.shape[1] + pause_idx.shape[1] != n:
            raise ValueError(
                f"PatchAssembler.pause: keep_idx {tuple(keep_idx.shape)} and pause_idx {tuple(pause_idx.shape)} "
                f"must split the {n} active tokens of {b} images"
            )
        if self._buffer is None:
            self._buffer = torch.empty((b, self.n_tokens, self.dim), dtype=self.dtype, device=self.device)
        if self._positions is None:
            paused_at, kept_at = pause_idx, keep_idx
        else:
            paused_at = torch.gather(self._positions, 1, pause_idx)
            kept_at = torch.gather(self._positions, 1, keep_idx)
        self._buffer = self._write(x, pause_idx, paused_at)
        self._positions = kept_at

    def full(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) out of place: paused tokens from the buffer, active ones from ``x`` (B, n_active, D).

        For encoders whose attention still reads paused tokens (deformable attention values).
        """
        self._check_open()
        if self._buffer is None:
            return x
        return assemble(self._buffer, self._positions, x)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Write the final active tokens ``x`` (B, n_active, D) in place; return the (B, N, D) output."""
        self._check_open()
        if x.shape != (self.batch_size, self.n_active, self.dim):
            raise ValueError(
                f"PatchAssembler.finish: x must be ({self.batch_size}, {self.n_active}, {self.dim}), got {tuple(x.shape)}"
            )
        self._finished = True
        if self._buffer is None:
            return x
        return self._write(x, None, self._positions)

    def _write(self, x: torch.Tensor, src_idx: torch.Tensor | None, dst_idx: torch.Tensor) -> torch.Tensor:
        """``buffer[b, dst_idx[b, r]] = x[b, src_idx[b, r]]`` in place (autograd-aware)."""
        buf = self._buffer
        if select_backend("assemble", buf, x, dst_idx) == "triton":
            from adaseg.ops.triton import library

            return library.WriteRows.apply(buf, x, src_idx, dst_idx)
        rows = x if src_idx is None else reference.gather_tokens(x, src_idx)
        # In-place scatter_ is differentiable: autograd zeroes the overwritten rows' gradient.
        return buf.scatter_(1, dst_idx.unsqueeze(-1).expand(*dst_idx.shape, self.dim), rows.to(buf.dtype))

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("PatchAssembler: finish() was already called; make a new assembler per forward pass")
