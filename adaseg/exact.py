"""Exact, round-trippable text for the numbers that name files and reports.

A name must encode a setting exactly: ``f"{x:g}"`` keeps 6 significant digits, so
``--beta 0.00050000001`` and ``--beta 0.0005`` both became ``0.0005`` and the second gate
overwrote the first, and a pause ratio ``0.9999999`` was recorded as ``1``.
:func:`exact_float` keeps the short ``:g`` form whenever it reads back as the same float
(``0.0005``, ``0``, ``1e-05``: the names in use stay as they were) and Python's shortest
round-tripping ``repr`` otherwise (``0.00050000001``, ``0.9999999``).
"""

from __future__ import annotations


def exact_float(x: float) -> str:
    """Shortest text ``t`` with ``float(t) == x``; ``:g`` style when that is exact."""
    x = float(x)
    short = f"{x:g}"
    return short if float(short) == x else repr(x)
