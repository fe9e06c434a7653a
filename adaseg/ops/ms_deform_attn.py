"""Dispatcher for multi-scale deformable attention: compiled extension, else reference.

The choice is explicit: the extension runs when it is built and has a kernel for the
inputs' device and dtype (see :mod:`adaseg.ops._extension`); otherwise the pure-PyTorch
reference runs and one warning per reason says how to get the fast path. The environment
variable ``ADASEG_MSDA_BACKEND`` forces a backend: ``reference``, or ``ext`` (an error
when the extension cannot run the inputs); ``auto`` or unset chooses as above.
"""

from __future__ import annotations

import os
import warnings

import torch

from adaseg.choices import MSDA_BACKEND_ENV as ENV_VAR, MSDA_BACKENDS as BACKENDS
from adaseg.ops import _extension, reference

_warned: set[str] = set()


def explain_backend(device: torch.device, dtype: torch.dtype) -> tuple[str, str]:
    """(backend, why) for inputs on ``device`` of ``dtype``: what :func:`select_backend`
    chooses, without warning (``adaseg doctor`` reports it). ``device`` need not exist here.

    Raises:
        ValueError: ``ADASEG_MSDA_BACKEND`` holds an unknown name.
        RuntimeError: ``ADASEG_MSDA_BACKEND=ext`` but the extension cannot run these inputs.
    """
    forced = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if forced not in BACKENDS:
        raise ValueError(f"{ENV_VAR}={os.environ[ENV_VAR]!r}: expected one of {', '.join(BACKENDS)}")
    if forced == "reference":
        return "reference", f"{ENV_VAR}=reference"
    reason = _extension.unsupported_reason(device, dtype)
    if reason is None:
        return "ext", f"{_extension.MODULE} has a {device.type.upper()} kernel for {dtype}" + (
            f" ({ENV_VAR}=ext)" if forced == "ext" else ""
        )
    if forced == "ext":
        raise RuntimeError(f"{ENV_VAR}=ext, but {reason}")
    return "reference", reason


def select_backend(value: torch.Tensor) -> str:
    """``"ext"`` or ``"reference"`` for inputs like ``value`` (device and dtype decide).

    The first time the reference runs for a reason, one warning names the reason and how
    to get the fast path.

    Raises:
        ValueError: ``ADASEG_MSDA_BACKEND`` holds an unknown name.
        RuntimeError: ``ADASEG_MSDA_BACKEND=ext`` but the extension cannot run these inputs.
    """
    backend, reason = explain_backend(value.device, value.dtype)
    if backend == "ext":
        _extension.load()
        return "ext"
    if reason.startswith(f"{ENV_VAR}="):  # the user chose the reference: nothing to warn about
        return "reference"
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(
            f"adaseg.ops.ms_deform_attn: using the slow pure-PyTorch reference because {reason} "
            f"(set {ENV_VAR}=reference to silence this).",
            RuntimeWarning,
            stacklevel=3,
        )
    return "reference"


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention; semantics of :func:`adaseg.ops.reference.ms_deform_attn`.

    Args:
        value: (N, S, M, D) per-head values of all levels, flattened level after level.
        spatial_shapes: (L, 2) int64 (H_l, W_l); sum of H_l*W_l == S.
        level_start_index: (L,) int64 exclusive prefix sum of H_l*W_l.
        sampling_locations: (N, Lq, M, L, P, 2) (x, y) normalised to [0, 1].
        attention_weights: (N, Lq, M, L, P).

    Returns:
        (N, Lq, M*D). Differentiable w.r.t. value, sampling_locations and attention_weights.
    """
    if select_backend(value) == "ext":
        return torch.ops.adaseg.ms_deform_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    return reference.ms_deform_attn(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
