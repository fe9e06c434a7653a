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

# Dataset splits the recipes read.
SPLITS = ("train", "val")

# Post-processing a prediction can ask for.
TASKS = ("panoptic", "semantic", "instance")
