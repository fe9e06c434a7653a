"""The Python API for code that embeds adaseg (re-exported from :mod:`adaseg`).

Thin wrappers over the recipes the CLI runs, so a script does not import from
``adaseg.recipes``::

    import adaseg

    model = adaseg.load_run("runs/default")                 # the parent, its latest gate attached
    out = model(images, padding_mask, adaseg.AdaptiveSettings(exits="gate", pause="3:0.4,5:0.3"))
    report = adaseg.evaluate("runs/default", pause="3:0.4,5:0.3")   # gate "auto", as `adaseg eval`
"""

from __future__ import annotations

import os
from typing import Any

import torch

from adaseg.models.adaptive.plan import PausePlan
from adaseg.models.adaptive.protocol import AdaptiveModel
from adaseg.engine.evaluate import EvalReport, EvalSettings
from adaseg.runs.gate_file import AUTO, choose_gate, load_gate
from adaseg.runs.parent import load_parent
from adaseg.runs.run_dir import DEFAULT_RUN, RunDir

__all__ = ["load_run", "load_parent", "load_gate", "evaluate"]


def load_run(run: str | os.PathLike = DEFAULT_RUN, *, gate: str | os.PathLike = AUTO,
             device: str | torch.device = "cpu") -> AdaptiveModel:
    """The parent of run directory ``run`` in eval mode on ``device``, with a gate attached.

    ``gate``: ``"auto"`` (the most recently fitted gate when the run has one), ``"latest"``
    (it must have one), ``"none"``, or a gate file. The gate must have been fitted for this
    parent (its fingerprint is checked). Use ``exits="gate"`` in the settings to let it decide.
    """
    run_dir = RunDir(run)
    run_dir.require("config", "parent")
    path = choose_gate(run_dir, _gate_spec(gate))
    model, info = load_parent(run_dir.parent_path, device=device)
    if path is not None:
        g, _ = load_gate(path, parent_fingerprint=info["fingerprint"])
        model.set_gate(g.to(device))
    return model


def evaluate(run: str | os.PathLike = DEFAULT_RUN, *, gate: str | os.PathLike = AUTO, exit: int | None = None,
             pause: PausePlan | str | None = None, pause_mode: str | None = None,
             device: str | torch.device = "cpu", **options: Any) -> EvalReport:
    """Score the run's parent on its val split as ``adaseg eval`` does; returns the report
    (nothing is written to the run directory).

    ``gate``: ``"auto"`` (as ``adaseg eval``: the most recently fitted gate when the run has one
    and no ``exit`` is given, else none), ``"latest"``, ``"none"`` or a gate file; ``exit``: a
    fixed exit (no gate); ``pause``: a :class:`PausePlan` or its spec; ``pause_mode``:
    ``"entropy"`` (the default) or ``"random"``, only with ``pause``; ``options``: the other
    :class:`~adaseg.engine.evaluate.EvalSettings` fields (batch_size, limit, flops_images,
    warmup, timed, seed, data). Arguments are checked as the command line checks its options:
    a bad or idle one raises :class:`ValueError` naming it.
    """
    from adaseg.engine.evaluate import evaluate as run_evaluation

    _check_eval_arguments(exit, pause, pause_mode, options)
    run_dir = RunDir(run)
    run_dir.require("config", "parent")
    path = choose_gate(run_dir, _gate_spec(gate), exit=exit)
    settings = EvalSettings(gate=None if path is None else str(path), exit=exit,
                            pause=PausePlan.parse(pause) if isinstance(pause, str) else pause,
                            pause_mode="entropy" if pause_mode is None else pause_mode, **options)
    return run_evaluation(run_dir, settings, device=torch.device(device))


def _gate_spec(gate: str | os.PathLike) -> str:
    if not isinstance(gate, (str, os.PathLike)):
        raise ValueError(f"gate must be 'auto', 'latest', 'none' or a gate file, got {gate!r}")
    return os.fspath(gate)


# `adaseg eval`'s bounds on its integer options (click.IntRange there); None = not set.
_MINIMUM = {"batch_size": 1, "limit": 1, "flops_images": 1, "warmup": 0, "timed": 1}
_OPTIONS = set(_MINIMUM) | {"seed", "data"}


def _check_eval_arguments(exit, pause, pause_mode: str | None, options: dict[str, Any]) -> None:
    """What ``adaseg eval`` refuses before it loads anything: an unknown option, an integer out
    of its range, an idle setting (``pause_mode`` without ``pause``, ``seed`` without random
    pausing). Exit and pause plan are checked against the parent by the evaluation itself."""
    from adaseg.choices import PAUSE_MODES

    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ValueError(f"adaseg.evaluate got unknown option(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(_OPTIONS))}")
    for name, value in [("exit", exit), *((k, options[k]) for k in _MINIMUM if k in options)]:
        if value is None and name in ("exit", "limit", "flops_images"):
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if name in _MINIMUM and value < _MINIMUM[name]:
            raise ValueError(f"{name} must be at least {_MINIMUM[name]}, got {value}")
    if "seed" in options and (isinstance(options["seed"], bool) or not isinstance(options["seed"], int)):
        raise ValueError(f"seed must be an integer, got {options['seed']!r}")
    if pause_mode is not None:
        if pause_mode not in PAUSE_MODES:
            raise ValueError(f"pause_mode must be one of {', '.join(PAUSE_MODES)}, got {pause_mode!r}")
        if pause is None:
            raise ValueError("pause_mode chooses which tokens pause: it needs pause (e.g. pause='3:0.4,5:0.3')")
    if "seed" in options and (pause is None or pause_mode != "random"):
        raise ValueError("seed seeds random pausing only: it needs pause=... and pause_mode='random'")
