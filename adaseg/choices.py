"""Closed sets of option values: their one definition, used by the models, data, predict,
the recipes and the CLI.

Torch-free on purpose: the CLI builds its ``click.Choice`` options from these at import
time, before any command runs, and ``adaseg --help`` must not pay for importing torch.
"""

from __future__ import annotations

# Step A recipes, in the order `adaseg train-parent --help` lists them (the default first).
RECIPES = ("wsd+pause", "wsd", "pause", "standard")

# PAUMER's pause selection: lowest auxiliary-decoder entropy, or uniformly random (the
# baseline).
PAUSE_MODES = ("entropy", "random")

# Where a paused token's label comes from (PAUMER App. I): the main decoder after the patch
# assembler (the default), or the auxiliary decoder of the layer where it paused (early exit
# at test time: the main decoder then reads only the tokens still active).
PAUSE_OUTPUTS = ("decoder", "aux")

# Dataset splits the recipes read.
SPLITS = ("train", "val")

# Post-processing a prediction can ask for.
TASKS = ("panoptic", "semantic", "instance")

# Backends a user may force through the environment (the ops read these variables; the CLI
# refuses an unknown value before any command runs). An empty value means auto.
MSDA_BACKEND_ENV = "ADASEG_MSDA_BACKEND"
MSDA_BACKENDS = ("auto", "reference", "ext")
PAUSE_BACKEND_ENV = "ADASEG_PAUSE_BACKEND"
PAUSE_BACKENDS = ("auto", "reference", "triton")
BACKEND_VARIABLES = {MSDA_BACKEND_ENV: MSDA_BACKENDS, PAUSE_BACKEND_ENV: PAUSE_BACKENDS}


def backend_variable_errors(environ) -> list[str]:
    """One message per backend variable of ``environ`` that holds no allowed value."""
    errors = []
    for name, allowed in BACKEND_VARIABLES.items():
        value = environ.get(name)
        if value is not None and (value.strip().lower() or "auto") not in allowed:
            errors.append(f"environment variable {name}={value!r} is not a backend: expected one of "
                          f"{', '.join(allowed)} (or leave it unset)")
    return errors
