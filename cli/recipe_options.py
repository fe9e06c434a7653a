"""Options of the recipe commands beyond :mod:`adaseg.cli.options`: list parsing and threads."""

from __future__ import annotations

import click

# One intra-op thread by default: on a shared 2-core CPU at load average ~9, two threads that
# wait on each other were 3-10x slower per training step than one; at load 1.3 two threads
# were 1.55x faster (0.62 vs 0.97 s per default train-parent iteration). One is the safe choice.
DEFAULT_THREADS = 1
MAX_THREADS = 4096  # torch.set_num_threads overflows far above; no machine has more


def set_threads(threads: int) -> None:
    """Apply ``--threads`` (0 keeps torch's default)."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


threads_option = click.option(
    "--threads", "threads", default=DEFAULT_THREADS, show_default=True, type=click.IntRange(0, MAX_THREADS),
    help="CPU threads for torch (0: torch's default). One is fastest on a busy 2-core machine.",
)


class IntList(click.ParamType):
    """``2,3,4`` or ``2..6`` -> tuple of ints."""

    name = "int,..."

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, tuple):
            return value
        text = str(value).strip()
        try:
            if ".." in text:
                lo, hi = text.split("..", 1)
                return tuple(range(int(lo), int(hi) + 1))
            return tuple(int(v) for v in text.split(","))
        except ValueError:
            self.fail(f"{value!r} is not a list of integers (e.g. 2,3,4 or 2..6)", param, ctx)


class FloatList(click.ParamType):
    """``0.2,0.4,1`` -> tuple of floats."""

    name = "float,..."

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, tuple):
            return value
        import math

        try:
            numbers = tuple(float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a list of numbers (e.g. 0.33,0.5,0.67,0.83,1)", param, ctx)
        if not all(math.isfinite(v) for v in numbers):
            self.fail(f"{value!r}: every number must be finite (no nan or inf)", param, ctx)
        return numbers


class Range01(click.ParamType):
    """``lo:hi`` with 0 < lo <= hi < 1 -> (lo, hi)."""

    name = "lo:hi"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        lo_text, sep, hi_text = str(value).partition(":")
        try:
            lo, hi = float(lo_text), float(hi_text)
        except ValueError:
            lo = hi = float("nan")
        if not sep or not (0.0 < lo <= hi < 1.0):
            self.fail(f"{value!r} must be lo:hi with 0 < lo <= hi < 1 (e.g. 0.2:0.8)", param, ctx)
        return (lo, hi)
