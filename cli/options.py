"""Options shared by the recipe commands, so every command spells them the same way.

Use as decorators: ``@run_option @quiet_option def cmd(run, quiet): ...``. Each option
validates its value at parse time and turns a bad value into one ``click.BadParameter``
line naming the flag.
"""

from __future__ import annotations

import click

DEFAULT_RUN = "runs/default"
DEFAULT_DATA = "synthetic"


class PauseSpec(click.ParamType):
    """``layer:ratio[,layer:ratio...]`` -> :class:`adaseg.models.adaptive.plan.PausePlan` (or None
    for ``none``/empty)."""

    name = "layer:ratio,..."

    def convert(self, value, param, ctx):
        from adaseg.models.adaptive.plan import PausePlan

        if value is None or isinstance(value, PausePlan):
            return value
        try:
            return PausePlan.parse(str(value))
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)


class DeviceType(click.ParamType):
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> :class:`torch.device`; ``auto`` is CUDA
    when available. Asking for CUDA on a machine without it is an error, not a fallback."""

    name = "auto|cpu|cuda[:N]"

    def convert(self, value, param, ctx):
        from adaseg.utils.device import parse_device  # one parser for --device and the API's device=

        try:
            return parse_device(value, name=None)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def given_on_command_line(ctx: click.Context, name: str) -> bool:
    """True when option ``name`` (its parameter name) was given by the user (command line or
    environment), not left at its default -- e.g. to refuse a setting that cannot take effect."""
    from click.core import ParameterSource

    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def check_pause_depth(plan, depth: int, *, param_hint: str = "'--pause'") -> None:
    """Raise ``click.BadParameter`` if ``plan`` pauses at or beyond the encoder's last layer."""
    if plan is None:
        return
    try:
        plan.check_depth(depth)
    except ValueError as exc:
        raise click.BadParameter(f"{plan}: {exc}", param_hint=param_hint) from None


run_option = click.option(
    "--run", "run", default=DEFAULT_RUN, show_default=True, metavar="DIR",
    type=click.Path(file_okay=False, dir_okay=True, writable=True),
    help="Run directory: each step reads what it needs from here and writes its result here.",
)
data_option = click.option(
    "--data", "data", default=DEFAULT_DATA, show_default=True, metavar="NAME|PATH",
    help="Dataset: 'synthetic' (built in), or a COCO panoptic / Cityscapes / ADE20K root.",
)
run_data_option = click.option(
    "--data", "data", default=None, metavar="NAME|PATH",
    help="Dataset to read instead of the run's own (config.json); it must have the run's categories "
         "[default: the run's dataset].",
)
device_option = click.option(
    "--device", "device", default="auto", show_default=True, type=DeviceType(),
    help="auto (CUDA when available), cpu, cuda or cuda:N.",
)
quiet_option = click.option(
    "--quiet", "-q", "quiet", is_flag=True, default=False,
    help="Print nothing but errors (the run directory's log.jsonl still records everything).",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, default=False,
    help="Print the result as one JSON object on stdout (for machines) instead of tables.",
)
pause_option = click.option(
    "--pause", "pause", default=None, type=PauseSpec(), metavar="LAYER:RATIO,...",
    help="Pause tokens after encoder layers, e.g. 3:0.4,5:0.3 (layers increasing, ratios in (0, 1)).",
)
def _pause_output_option():
    from adaseg.choices import PAUSE_OUTPUTS

    return click.option(
        "--pause-output", "pause_output", type=click.Choice(PAUSE_OUTPUTS), default="decoder", show_default=True,
        help="Who labels a paused token: the main decoder after the patch assembler (PAUMER), or aux: the "
             "auxiliary decoder of the layer where it paused, the main decoder reading only the active tokens "
             "(PAUMER's early exit, App. I; Segmenter only). Needs a pause plan.",
    )


pause_output_option = _pause_output_option()
seed_option = click.option(
    "--seed", "seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
    help="Random seed.",
)
