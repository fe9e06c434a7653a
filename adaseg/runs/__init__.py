"""The run directory and its artefacts: layout (RunDir), parent, derived dataset, gate files, lock, run data."""
