"""The lean inference pause stage (issue 23): one PAUMER pause stage as few device launches,
set up once per shape, with no dispatch, custom-op or autograd wrapper and no per-call checks.

The registered custom ops (:mod:`adaseg.ops.pausing`, ``torch.ops.adaseg_pause.*``) stay the
path for training and ``torch.compile``; this one is for ``inference_mode``/``no_grad`` (:func:`adaseg.ops.pausing.lean`
switches it off, e.g. for the benchmarks' reference arm), where
each of their wrappers cost a GPU more host time than the bytes they move (see
``../shared/notes/gpu-pausing-diagnosis.md``). A stage is built once per
(b, n, n_keep, D, C, dtype, device) (:func:`stage_for`, cached): the entropy backend is chosen
then (:func:`choose_entropy_backend`), the entropy output and the constant index tensors are
allocated then. A call (:meth:`PauseStage.select`) is, for b images of n active tokens:

1. the scores: the fused Triton entropy kernel (one launch, into the stage's (b, n) buffer)
   or the reference (``x W^T + b``, log-softmax, entropy); padding
   tokens' scores set to -inf (one ``masked_fill_``, only with padding);
2. the keep choice: one stable descending sort of the scores; the first ``n_keep`` are kept,
   the others pause, among equal scores the lower index kept (the reference's rule);
   one add and one sort put both parts in ascending index order in ONE (b, n) tensor
   ``[keep_local | pause_local]``;
3. the compaction: one ``gather`` of the original positions at that tensor gives
   ``[kept_at | paused_at]`` at once, one ``gather`` the kept tokens; the per-token inputs
   are gathered by the caller (one ``gather`` each, from the active views).

Outputs that outlive the call (kept tokens, indices, positions) are new tensors each call;
only intermediates live in the stage. Ties and padding follow :func:`adaseg.ops.reference.topk_keep`
exactly; the entropy equals the reference's on CPU bit for bit (same ops), and within float
tolerance through the Triton kernel.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import torch

from adaseg.choices import PAUSE_BACKEND_ENV as BACKEND_ENV
from adaseg.ops import pausing, reference

__all__ = ["PauseStage", "StageSelection", "stage_for", "choose_entropy_backend", "entropy_choices"]

_log = logging.getLogger(__name__)
_stages: dict[tuple, "PauseStage"] = {}
# (b, n, D, C, dtype, device) -> (backend, why): what auto chose at that shape, measured once
_entropy_choice: dict[tuple, tuple[str, str]] = {}


def entropy_choices() -> dict[tuple, tuple[str, str]]:
    """{(b, n, D, C, dtype, device): (backend, why)} chosen so far in this process."""
    return dict(_entropy_choice)


@dataclass
class StageSelection:
    """One stage's choice for b images of n active tokens, m = n - n_keep paused.

    ``local``: (b, n) int64 ``[keep_local | pause_local]``, indices among the n active tokens,
    each part ascending; ``at``: (b, n) int64 the same tokens' rows in the full map;
    ``kept``: (b, n_keep, D) the kept tokens. The properties are views of these.
    """

    local: torch.Tensor
    at: torch.Tensor
    kept: torch.Tensor
    n_keep: int

    @property
    def keep_local(self) -> torch.Tensor:
        return self.local[:, : self.n_keep]

    @property
    def paused_local(self) -> torch.Tensor:
        return self.local[:, self.n_keep :]

    @property
    def kept_at(self) -> torch.Tensor:
        return self.at[:, : self.n_keep]

    @property
    def paused_at(self) -> torch.Tensor:
        return self.at[:, self.n_keep :]


def _time_ms(fn, repeats: int = 20) -> float:
    """Median device milliseconds of ``fn()`` on the current CUDA stream (CUDA events)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def choose_entropy_backend(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[str, str]:
    """(backend, why) for the entropy of (b, n, D) tokens ``x`` at this shape, decided once.

    A forced ``ADASEG_PAUSE_BACKEND`` wins (checked as :func:`adaseg.ops.pausing.explain_backend`
    does). ``auto`` on CUDA with triton installed times the fused kernel against the reference
    at this very shape (CUDA events, median of 20) and takes the faster; the choice is cached
    per (b, n, D, C, dtype, device). Anywhere else the rule of :func:`explain_backend` holds.
    """
    ok = all(t.dtype in (torch.float32, torch.float16, torch.bfloat16) for t in (x, weight, bias))
    backend, why = pausing.explain_backend("aux_entropy", x.device.type, triton_dtypes_ok=ok)
    forced = os.environ.get(BACKEND_ENV, "").strip().lower() not in ("", "auto")
    if backend != "triton" or forced or x.device.type != "cuda":
        return backend, why
    key = (*x.shape, weight.shape[0], x.dtype, str(x.device))
    if key not in _entropy_choice:
        from adaseg.ops.triton.entropy import EntropyLauncher

        out = torch.empty(x.shape[:2], dtype=torch.float32, device=x.device)
        launcher = EntropyLauncher(x, weight, bias, out)
        with torch.inference_mode():
            t_triton = _time_ms(lambda: launcher(x, weight, bias, out))
            t_ref = _time_ms(lambda: reference.aux_entropy(x, weight, bias))
        backend = "triton" if t_triton <= t_ref else "reference"
        _entropy_choice[key] = (backend, f"auto: measured at (b, n, D, C) = {tuple(key[:4])}, {x.dtype}: "
                                         f"triton {t_triton * 1e3:.1f} us, reference {t_ref * 1e3:.1f} us")
        _log.info("adaseg pausing: entropy at %s uses %s (%s)", key[:4], *_entropy_choice[key])
    return _entropy_choice[key]


class PauseStage:
    """One pause stage for b images of n active (b, n, D) tokens keeping ``n_keep`` of each,
    scored by a (C, D) decoder; built by :func:`stage_for` (see the module docstring)."""

    def __init__(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n_keep: int, *,
                 entropy: bool):
        b, n, _ = x.shape
        if not 1 <= n_keep <= n:
            raise ValueError(f"n_keep must be in [1, {n}], got {n_keep}")
        self.n_keep = n_keep
        self._n = n
        # [0] * n_keep + [n] * (n - n_keep): lifts the pause part above the keep part, so that
        # one sort orders both parts, each ascending, in one tensor
        self._lift = torch.cat([torch.zeros(n_keep, dtype=torch.long, device=x.device),
                                torch.full((n - n_keep,), n, dtype=torch.long, device=x.device)]).unsqueeze(0)
        self._score = torch.empty((b, n), dtype=torch.float32, device=x.device)  # the kernel's output
        self.backend, self.why = choose_entropy_backend(x, weight, bias) if entropy else ("reference", "random")
        self._launcher = None
        if entropy and self.backend == "triton":
            from adaseg.ops.triton.entropy import EntropyLauncher

            self._launcher = EntropyLauncher(x, weight, bias, self._score)

    def scores(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """(b, n) float32 entropy of the decoder's class posterior per token (the Triton kernel
        writes the stage's buffer; the reference returns a new tensor: no copy on CPU)."""
        if self._launcher is not None:
            return self._launcher(x, weight, bias, self._score)
        return reference.aux_entropy(x, weight, bias)

    def select(self, x: torch.Tensor, score: torch.Tensor, positions: torch.Tensor | None,
               padding: torch.Tensor | None) -> StageSelection:
        """Keep the ``n_keep`` highest-scoring of the (b, n, D) tokens ``x``.

        Args:
            x: (b, n, D) active tokens.
            score: (b, n) their scores (:meth:`scores`, or random ones); overwritten with -inf
                at padding (in place: pass a tensor nothing else reads).
            positions: (b, n) int64 rows of the active tokens in the full map, or None (0..n-1).
            padding: (b, n) bool True on padding tokens among the active ones (they pause
                first), or None.
        """
        if padding is not None:
            score = score.masked_fill_(padding, float("-inf"))
        order = torch.sort(score, dim=1, descending=True, stable=True).indices
        local = torch.sort(order.add_(self._lift), dim=1).values.sub_(self._lift)
        at = local if positions is None else torch.gather(positions, 1, local)
        keep = local[:, : self.n_keep]
        kept = torch.gather(x, 1, keep.unsqueeze(-1).expand(*keep.shape, x.shape[-1]))
        return StageSelection(local=local, at=at, kept=kept, n_keep=self.n_keep)


def stage_for(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n_keep: int, *,
              entropy: bool = True) -> PauseStage:
    """The :class:`PauseStage` for this shape, built on first use and cached."""
    key = (*x.shape, n_keep, weight.shape[0], x.dtype, weight.dtype, str(x.device), entropy,
           os.environ.get(BACKEND_ENV, ""))
    stage = _stages.get(key)
    if stage is None:
        start = time.perf_counter()
        stage = _stages[key] = PauseStage(x, weight, bias, n_keep, entropy=entropy)
        _log.debug("adaseg pausing: built a lean stage for %s in %.1f ms", key[:4], (time.perf_counter() - start) * 1e3)
    return stage


def explain_stage_backend(device_type: str) -> tuple[str, str]:
    """(backend, why) the lean stage's entropy takes on tensors of ``device_type``, without
    measuring: on CUDA under ``auto`` that is "measured per shape" (see
    :func:`choose_entropy_backend`; :func:`measure_stage_backends` measures). Raises as
    :func:`adaseg.ops.pausing.explain_backend` does for a forced backend that cannot run."""
    backend, why = pausing.explain_backend("aux_entropy", device_type)
    forced = os.environ.get(BACKEND_ENV, "").strip().lower() not in ("", "auto")
    if backend == "triton" and not forced and device_type == "cuda":
        return "auto", ("the faster of triton and reference, timed at each shape when its pause stage is first "
                        "built (CUDA events, cached per shape)")
    return backend, why


# the paper's stage shapes (b, n, D, C): ViT-S ADE20K 512 and Mask2Former at COCO size
DOCTOR_SHAPES = ((32, 1024, 384, 150), (2, 21504, 256, 133))


def measure_stage_backends(device: str = "cuda", dtype: torch.dtype = torch.bfloat16) -> list[tuple[tuple, str, str]]:
    """[(shape, backend, why)] chosen for the lean stage at :data:`DOCTOR_SHAPES` on ``device``
    (measured there under ``auto``)."""
    out = []
    g = torch.Generator().manual_seed(0)
    for b, n, d, c in DOCTOR_SHAPES:
        x = torch.randn(b, n, d, generator=g).to(device, dtype)
        w = (torch.randn(c, d, generator=g) / d ** 0.5).to(device, dtype)
        bias = torch.zeros(c, device=device, dtype=dtype)
        backend, why = choose_entropy_backend(x, w, bias)
        out.append(((b, n, d, c), backend, why))
    return out
