"""The Python API for code that embeds adaseg (re-exported from :mod:`adaseg`).

Thin wrappers over the recipes the CLI runs, so a script does not import from
``adaseg.recipes``::

    import adaseg

    model = adaseg.load_run("runs/default")                 # the parent, its latest gate attached
    out = model(images, padding_mask, adaseg.AdaptiveSettings(exits="gate", pause="3:0.4,5:0.3"))
    report = adaseg.evaluate("runs/default", gate="latest", pause="3:0.4,5:0.3")
"""

from __future__ import annotations

import os
from typing import Any

import torch

from adaseg.models.adaptive.plan import PausePlan
from adaseg.models.adaptive.protocol import AdaptiveModel
from adaseg.engine.evaluate import EvalReport, EvalSettings
from adaseg.runs.gate_file import load_gate, resolve_gate
from adaseg.runs.parent import load_parent
from adaseg.runs.run_dir import DEFAULT_RUN, RunDir

__all__ = ["load_run", "load_parent", "load_gate", "evaluate"]


def load_run(run: str | os.PathLike = DEFAULT_RUN, *, gate: str = "auto",
             device: str | torch.device = "cpu") -> AdaptiveModel:
    """The parent of run directory ``run`` in eval mode on ``device``, with a gate attached.

    ``gate``: ``"auto"`` (the most recently fitted gate when the run has one), ``"latest"``
    (it must have one), ``"none"``, or a gate file. The gate must have been fitted for this
    parent (its fingerprint is checked). Use ``exits="gate"`` in the settings to let it decide.
    """
    run_dir = RunDir(run)
    run_dir.require("config", "parent")
    model, info = load_parent(run_dir.parent_path, device=device)
    if gate == "auto":
        gate = "latest" if run_dir.has("gate") else "none"
    path = resolve_gate(run_dir, gate)
    if path is not None:
        g, _ = load_gate(path, parent_fingerprint=info["fingerprint"])
        model.set_gate(g.to(device))
    return model


def evaluate(run: str | os.PathLike = DEFAULT_RUN, *, gate: str = "none", exit: int | None = None,
             pause: PausePlan | str | None = None, pause_mode: str = "entropy",
             device: str | torch.device = "cpu", **options: Any) -> EvalReport:
    """Score the run's parent on its val split as ``adaseg eval`` does; returns the report
    (nothing is written to the run directory).

    ``gate``: ``"none"``, ``"latest"`` or a gate file; ``exit``: a fixed exit (no gate);
    ``pause``: a :class:`PausePlan` or its spec; ``options``: the other
    :class:`~adaseg.engine.evaluate.EvalSettings` fields (batch_size, limit, flops_images,
    warmup, timed, seed, data).
    """
    from adaseg.engine.evaluate import evaluate as run_evaluation

    run_dir = RunDir(run)
    run_dir.require("config", "parent")
    path = resolve_gate(run_dir, gate)
    settings = EvalSettings(gate=None if path is None else str(path), exit=exit,
                            pause=PausePlan.parse(pause) if isinstance(pause, str) else pause,
                            pause_mode=pause_mode, **options)
    return run_evaluation(run_dir, settings, device=torch.device(device))
