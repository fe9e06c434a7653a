"""Numeric option types of every command: finite, and within a range the work can take.

Click's ``float``/``FloatRange`` accept ``nan`` and ``inf`` (every comparison with NaN is
false, so no bound stops it); :class:`FiniteFloat` refuses them at parse time, before any
work, with one ``Invalid value for '--flag': 'nan' is not a finite number`` line. Seeds are
``0 <= seed < 2**32`` (what every random generator adaseg seeds accepts, numpy's included,
with room for the per-epoch and per-rank offsets added to them); bootstrap resample counts
are bounded by :data:`MAX_BOOTSTRAP`.
"""

from __future__ import annotations

import math

import click

SEED_MAX = 2**32 - 1
# Paired-bootstrap resamples: papers use 1,000-10,000; each resample recomputes every figure in
# Python, so 100,000 already takes minutes. Memory is bounded separately (adaseg.eval.bootstrap).
MAX_BOOTSTRAP = 100_000


class FiniteFloat(click.FloatRange):
    """A float option that must be finite (no ``nan``, ``inf``), optionally within a range
    (the arguments of :class:`click.FloatRange`)."""

    name = "float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


def seed_type() -> click.IntRange:
    """``0 <= seed <= 2**32 - 1``."""
    return click.IntRange(0, SEED_MAX)


def at_most_max_bootstrap(ctx, param, value):
    """Click callback of the ``--bootstrap`` options: refuse more than :data:`MAX_BOOTSTRAP`
    resamples (their own type keeps its lower bound and its messages)."""
    if value is not None and value > MAX_BOOTSTRAP:
        raise click.BadParameter(f"{value} resamples: at most {MAX_BOOTSTRAP} (each recomputes every figure; "
                                 "10,000 already give stable 90% intervals)", ctx=ctx, param=param)
    return value
