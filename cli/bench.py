"""``adaseg bench``: benchmarks that print figures (ratios measured in one run)."""

from __future__ import annotations

import click


@click.group(name="bench")
def bench() -> None:
    """Benchmarks: each prints its figures and the ratios measured in one run."""


def _register() -> None:
    # Each benchmark registers here, one import each.
    from adaseg.cli.bench_pause import pause

    bench.add_command(pause)
    from adaseg.cli.bench_m2f import m2f; bench.add_command(m2f)  # noqa: E702
    from adaseg.cli.bench_op import op

    bench.add_command(op)
    from adaseg.cli.bench_model import model

    bench.add_command(model)


_register()
