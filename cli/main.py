"""The ``adaseg`` Click group. Each subcommand lives in its own module of this package
and is added to the group below; modules import heavy libraries inside the command
body so that ``adaseg --help`` stays fast."""

from __future__ import annotations

import click

from adaseg import __version__


# Commands that report a bad backend variable instead of refusing to run (they diagnose it).
_REPORTS_BACKENDS = ("doctor",)


class _Group(click.Group):
    def resolve_command(self, ctx, args):
        name, cmd, rest = super().resolve_command(ctx, args)
        # the group's callback runs before the subcommand parses: note whether it only asks for help
        ctx.meta["adaseg.help"] = any(a in ("-h", "--help") for a in rest)
        return name, cmd, rest


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="adaseg")
@click.pass_context
def main(ctx: click.Context) -> None:
    """adaseg: segmentation transformers that adapt their compute to each image.

    \b
    The recipe (ECO-M2F + PAUMER), chained through one run directory:
      adaseg train-parent            Step A: weighted stochastic depth + random pausing
      adaseg derive                  Step B: per-image quality at every exit
      adaseg fit-gate --beta 0.0005  Step C: the gate for one trade-off
      adaseg eval --pause 3:0.4,5:0.3
    """
    _check_environment(ctx)


def _check_environment(ctx: click.Context) -> None:
    """Refuse, before any work, an environment variable that would stop the command later
    (a backend variable naming no backend): one line naming the variable, its value and
    the allowed values. ``--help`` and ``adaseg doctor`` still run."""
    import os

    from adaseg.choices import backend_variable_errors

    if ctx.invoked_subcommand in _REPORTS_BACKENDS or ctx.meta.get("adaseg.help"):
        return
    errors = backend_variable_errors(os.environ)
    if errors:
        raise click.ClickException(errors[0])


def _register() -> None:
    # Subcommand modules register here, one import each.
    from adaseg.cli.bench import bench

    main.add_command(bench)
    from adaseg.cli.fit_gate import fit_gate; main.add_command(fit_gate)  # noqa: E702
    from adaseg.cli.train_parent import train_parent; main.add_command(train_parent)  # noqa: E702
    from adaseg.cli.derive import derive; main.add_command(derive)  # noqa: E702
    from adaseg.cli.eval import eval_cmd; main.add_command(eval_cmd)  # noqa: E702
    from adaseg.cli.compare import compare; main.add_command(compare)  # noqa: E702
    from adaseg.cli.sweep import sweep; main.add_command(sweep)  # noqa: E702
    from adaseg.cli.skyline import skyline; main.add_command(skyline)  # noqa: E702
    from adaseg.cli.predict import predict; main.add_command(predict)  # noqa: E702
    from adaseg.cli.demo import demo; main.add_command(demo)  # noqa: E702
    from adaseg.cli.data import data; main.add_command(data)  # noqa: E702
    from adaseg.cli.score import score; main.add_command(score)  # noqa: E702
    from adaseg.cli.import_weights import import_weights; main.add_command(import_weights)  # noqa: E702
    from adaseg.cli.init_run import init_run; main.add_command(init_run)  # noqa: E702
    from adaseg.cli.doctor import doctor; main.add_command(doctor)  # noqa: E702


_register()

if __name__ == "__main__":
    main()
