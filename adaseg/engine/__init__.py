"""The steps of the recipe: train-parent (Step A), derive (B), fit-gate (C), evaluate, and the demo sequence."""
