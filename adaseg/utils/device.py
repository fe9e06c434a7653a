"""The one device parser of the command line (``--device``) and the Python API (``device=``).

``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (case and surrounding blanks ignored) or a
:class:`torch.device` -> :class:`torch.device`. ``auto`` is CUDA when available. Asking for
CUDA on a machine without it is an error, not a fallback, and is refused here -- not by an
assertion deep inside torch when the first tensor moves.
"""

from __future__ import annotations

import torch

from adaseg.utils.arguments import ArgumentTypeError, describe

__all__ = ["DeviceError", "parse_device"]

ALLOWED = "auto, cpu, cuda, cuda:N or a torch.device"


class DeviceError(ValueError):
    """A device that is not one, or one this machine does not have."""


def parse_device(value: str | torch.device, *, name: str | None = "device") -> torch.device:
    """``value`` -> :class:`torch.device` (see the module docstring).

    ``name``: the parameter, prefixed to messages (``device='cuda': ...``); None leaves the
    value alone at the start (the CLI, where click names the flag).

    Raises:
        ArgumentTypeError: neither a string nor a torch.device.
        DeviceError: not a device, not cpu/cuda, or CUDA (or that CUDA index) not available.
    """
    label = repr(value) if name is None else f"{name}={value!r}"
    if isinstance(value, torch.device):
        device = value
    elif isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(text)
        except RuntimeError:
            allowed = "auto, cpu, cuda or cuda:N" if name is None else ALLOWED
            raise DeviceError(f"{label} is not a device (use {allowed})") from None
    else:
        raise ArgumentTypeError(f"{name or 'device'} must be {ALLOWED}, got {describe(value)}")
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"{label}: only cpu and cuda devices are supported")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            hint = "--device cpu" if name is None else f"{name}='cpu'"
            raise DeviceError(f"{label}: CUDA is not available on this machine (no CUDA device; use {hint})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"{label}: only {torch.cuda.device_count()} CUDA devices are visible")
    return device
