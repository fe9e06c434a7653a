"""Argument checks of the Python API: one line naming the parameter and what it allows.

The Python API takes numbers as numbers: an ``int`` parameter refuses ``bool`` (an ``int``
subclass that is never meant as a count or a layer) and refuses strings (``exit="3"``) --
only the command line parses text. Specs that are text on the command line (a pause plan
``"3:0.4,5:0.3"``, a device ``"cuda:0"``, a gate ``"latest"``) are accepted as strings.

A wrong type raises :class:`ArgumentTypeError`, which is both a :class:`TypeError` and a
:class:`ValueError` (callers that caught ``ValueError`` for any bad argument keep working);
a value of the right type out of its range raises :class:`ValueError`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["ArgumentTypeError", "check_bool", "check_choice", "check_int", "check_real", "describe"]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (also a ValueError: a bad argument either way)."""


def describe(value: Any) -> str:
    """``'3' (str)``: the value and its type, short enough for one line."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None,
              optional: bool = False) -> int | None:
    """``value`` as an ``int`` (a Python or NumPy integer, never a bool or a string) in
    ``minimum..maximum``; None passes when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        what = "an integer or None" if optional else "an integer"
        raise ArgumentTypeError(f"{name} must be {what}, got {describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return value


def check_real(value: Any, name: str) -> float:
    """``value`` as a finite ``float`` (an int or float, never a bool or a string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a number, got {describe(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_bool(value: Any, name: str, *, optional: bool = False) -> bool | None:
    """``value`` if it is True or False (None too when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        what = "True, False or None" if optional else "True or False"
        raise ArgumentTypeError(f"{name} must be {what}, got {describe(value)}")
    return value


def check_choice(value: Any, name: str, choices: tuple[str, ...], *, optional: bool = False) -> str | None:
    """``value`` if it is one of the strings ``choices`` (None too when ``optional``)."""
    if value is None and optional:
        return None
    allowed = ", ".join(choices) + (" or None" if optional else "")
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be one of {allowed}, got {describe(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value
