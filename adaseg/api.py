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
from adaseg.utils.arguments import ArgumentTypeError, check_choice, check_int, describe
from adaseg.utils.device import parse_device

__all__ = ["load_run", "load_parent", "load_gate", "evaluate"]


def load_run(run: str | os.PathLike = DEFAULT_RUN, *, gate: str | os.PathLike = AUTO,
             device: str | torch.device = "cpu") -> AdaptiveModel:
    """The parent of run directory ``run`` in eval mode on ``device``, with a gate attached.

    ``gate``: ``"auto"`` (the most recently fitted gate when the run has one), ``"latest"``
    (it must have one), ``"none"``, or a gate file. The gate must have been fitted for this
    parent (its fingerprint is checked). Use ``exits="gate"`` in the settings to let it decide.
    ``device``: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a :class:`torch.device`
    (CUDA on a machine without it raises ValueError). A wrong type raises TypeError, a bad
    value ValueError, each naming the parameter, before anything is loaded.
    """
    run_dir = RunDir(_run_path(run))
    gate = _gate_spec(gate)
    device = parse_device(device, name="device")
    run_dir.require("config", "parent")
    path = choose_gate(run_dir, gate)
    model, info = load_parent(run_dir.parent_path, device=device)
    if path is not None:
        g, _ = load_gate(path, parent_fingerprint=info["fingerprint"])
        model.set_gate(g.to(device))
    return model


def evaluate(run: str | os.PathLike = DEFAULT_RUN, *, gate: str | os.PathLike = AUTO, exit: int | None = None,
             pause: PausePlan | str | None = None, pause_mode: str | None = None, pause_output: str = "decoder",
             device: str | torch.device = "cpu", beta: float | None = None, **options: Any) -> EvalReport:
    """Score the run's parent on its val split as ``adaseg eval`` does; returns the report
    (nothing is written to the run directory). ``run`` may also be a model checkpoint file
    (a parent, an imported model), scored on ``data`` (required then), as ``adaseg eval
    --parent CKPT --data SPEC``.

    ``gate``: ``"auto"`` (as ``adaseg eval``: the most recently fitted gate when the run has one
    and no ``exit`` is given, else none), ``"latest"``, ``"none"``, a gate file, or ``"oracle"``
    with ``beta`` (as ``adaseg eval --gate oracle --beta B``: each val image at its best exit
    under ``beta`` by the run's val Step B, ``adaseg derive --split val``; a bound, not a
    gate); ``beta``: the oracle's trade-off (a finite number >= 0, only with
    ``gate="oracle"``); ``exit``: a fixed exit (no gate); ``pause``: a :class:`PausePlan` or its spec; ``pause_mode``:
    ``"entropy"`` (the default) or ``"random"``, only with ``pause``; ``pause_output``:
    ``"decoder"`` (the default) or ``"aux"`` (PAUMER's early exit: paused tokens labelled by
    their auxiliary decoder; only with ``pause``, on a model that has it); ``options``: the other
    :class:`~adaseg.engine.evaluate.EvalSettings` fields (batch_size, limit, flops_images,
    warmup, timed, seed, data); ``device``: as :func:`load_run`. Arguments are checked as the
    command line checks its options, before anything is loaded: a bad or idle one raises
    :class:`ValueError` naming it (a wrong type: an ``ArgumentTypeError``, both a TypeError and
    a ValueError). Numbers are ints, never bools or strings (``exit="3"`` is refused: only the
    command line parses text); ``pause``, ``gate``, ``device`` and ``data`` take their specs
    as strings.
    """
    from adaseg.engine.evaluate import evaluate as run_evaluation

    run_dir = RunDir(_run_path(run))
    gate = _gate_spec(gate)
    pause = _pause_plan(pause)
    exit, options = _check_eval_arguments(exit, pause, pause_mode, options)
    oracle_beta = _oracle_beta(gate, beta, exit)
    _check_pause_output(pause_output, pause)
    device = parse_device(device, name="device")
    if os.path.isfile(run_dir.root):  # a checkpoint: its "own" dataset is data=
        from adaseg.runs.from_checkpoint import CheckpointRun

        if options.get("data") is None:
            raise ValueError(f"{run_dir.root} is a checkpoint: give data= (the dataset to score it on)")
        run_dir, options = CheckpointRun(run_dir.root, data=options["data"]), {**options, "data": None}
        if oracle_beta is not None:
            raise ValueError(f"{run_dir.root} is a checkpoint: the oracle gate reads a run's val Step B "
                             "(`adaseg derive --split val`); give a run directory")
    run_dir.require("config", "parent")
    path = None if oracle_beta is not None else choose_gate(run_dir, gate, exit=exit)
    settings = EvalSettings(gate=None if path is None else str(path), exit=exit, pause=pause,
                            pause_mode="entropy" if pause_mode is None else pause_mode, pause_output=pause_output,
                            oracle_beta=oracle_beta, **options)
    return run_evaluation(run_dir, settings, device=device)


def _oracle_beta(gate: str, beta, exit) -> float | None:
    """``beta`` of ``gate="oracle"`` (None for any other gate), checked as ``adaseg eval --gate
    oracle --beta`` checks it; each misuse is one line."""
    import math

    if gate != "oracle":
        if beta is not None:
            raise ValueError("beta sets the oracle gate's trade-off: it needs gate='oracle' (a fitted gate's beta "
                             "is in its file)")
        return None
    if beta is None:
        raise ValueError("gate='oracle' needs beta (e.g. beta=0.0005)")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise ArgumentTypeError(f"beta must be a finite number >= 0, got {describe(beta)}")
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if exit is not None:
        raise ValueError("gate='oracle' picks each image's exit: it excludes exit")
    return float(beta)


def _run_path(run) -> str:
    if not isinstance(run, (str, os.PathLike)) or not isinstance(os.fspath(run), str):
        raise ArgumentTypeError(f"run must be a run directory (a path), got {describe(run)}")
    if not os.fspath(run).strip():
        raise ValueError("run must be a run directory (a path), got ''")
    return os.fspath(run)


def _gate_spec(gate: str | os.PathLike) -> str:
    if not isinstance(gate, (str, os.PathLike)) or not isinstance(os.fspath(gate), str):
        raise ArgumentTypeError(f"gate must be 'auto', 'latest', 'none' or a gate file, got {describe(gate)}")
    if not os.fspath(gate).strip():
        raise ValueError("gate must be 'auto', 'latest', 'none' or a gate file, got ''")
    return os.fspath(gate)


def _pause_plan(pause) -> PausePlan | None:
    if isinstance(pause, str):
        return PausePlan.parse(pause)
    if pause is not None and not isinstance(pause, PausePlan):
        raise ArgumentTypeError(f"pause must be a PausePlan, a spec like '3:0.4,5:0.3' or None, got {describe(pause)}")
    return pause


def _check_pause_output(pause_output, pause) -> None:
    """``adaseg eval --pause-output``'s checks: one of decoder/aux, and aux only with a pause plan."""
    from adaseg.choices import PAUSE_OUTPUTS

    check_choice(pause_output, "pause_output", PAUSE_OUTPUTS)
    if pause_output == "aux" and pause is None:
        raise ValueError("pause_output='aux' labels paused tokens by their auxiliary decoder: it needs pause "
                         "(e.g. pause='3:0.4,5:0.3')")


# `adaseg eval`'s bounds on its integer options (click.IntRange there); None = not set.
_MINIMUM = {"batch_size": 1, "limit": 1, "flops_images": 1, "warmup": 0, "timed": 1}
_OPTIONS = set(_MINIMUM) | {"seed", "data"}


def _check_eval_arguments(exit, pause, pause_mode: str | None, options: dict[str, Any]) -> tuple[int | None, dict]:
    """What ``adaseg eval`` refuses before it loads anything: an unknown option, an integer out
    of its range, an idle setting (``pause_mode`` without ``pause``, ``seed`` without random
    pausing). Exit and pause plan are checked against the parent by the evaluation itself.
    Returns ``(exit, options)`` normalised (Python ints, ``data`` a string)."""
    from adaseg.choices import PAUSE_MODES

    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ValueError(f"adaseg.evaluate got unknown option(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(_OPTIONS))}")
    options = dict(options)
    exit = check_int(exit, "exit", minimum=1, optional=True)
    for name, minimum in _MINIMUM.items():
        if name in options:
            options[name] = check_int(options[name], name, minimum=minimum, optional=name in ("limit", "flops_images"))
    if "seed" in options:
        options["seed"] = check_int(options["seed"], "seed", minimum=0, maximum=2 ** 32 - 1)
    if "data" in options and options["data"] is not None:
        data = options["data"]
        if not isinstance(data, (str, os.PathLike)) or not isinstance(os.fspath(data), str):
            raise ArgumentTypeError(f"data must be a --data spec (a name or a path) or None, got {describe(data)}")
        if not os.fspath(data).strip():
            raise ValueError("data must be a --data spec (a name or a path) or None, got ''")
        options["data"] = os.fspath(data)
    if pause_mode is not None:
        check_choice(pause_mode, "pause_mode", PAUSE_MODES)
        if pause is None:
            raise ValueError("pause_mode chooses which tokens pause: it needs pause (e.g. pause='3:0.4,5:0.3')")
    if "seed" in options and (pause is None or pause_mode != "random"):
        raise ValueError("seed seeds random pausing only: it needs pause=... and pause_mode='random'")
    return exit, options
