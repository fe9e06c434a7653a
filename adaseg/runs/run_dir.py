"""The run directory: everything a step needs from an earlier step is read from here.

Layout of ``--run DIR`` (default ``runs/default``)::

    DIR/
      config.json                    the run's settings (model, data, recipe), from train-parent
      checkpoints/
        parent.safetensors (+ .json) Step A's parent (tensors + config + fingerprint)
        last.safetensors   (+ .json) train-parent's resumable state (weights, optimiser, step)
      derived.safetensors  (+ .json) Step B's derived dataset (see adaseg.runs.derived)
      gates/
        gate_beta0.0005_K6_hard-ce.safetensors (+ .json)   one file per Step C setting
      reports/
        eval_<name>.json             evaluation reports
        eval_<name>.parts.safetensors  their per-image parts (adaseg.eval.image_parts)
      sweeps/<name>/                 adaseg sweep: sweep.json, sweep.csv, plots
      log.jsonl                      one JSON object per line: every command's events

Every file is written atomically (:mod:`adaseg.storage.atomic`). When a step's input is
missing, :meth:`RunDir.require` raises :class:`MissingStepError` whose message names the
command to run first, e.g. ``runs/default has no derived dataset: run `adaseg derive --run
runs/default` first``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from adaseg.storage.atomic import atomic_write_json

DEFAULT_RUN = "runs/default"


class MissingStepError(FileNotFoundError):
    """A step's input is not in the run directory; the message says which command makes it."""


class RunDirError(ValueError):
    """The run directory holds something inconsistent (e.g. artefacts of another parent)."""


# artefact -> (what it is called in messages, the command that makes it)
_STEPS = {
    "config": ("config.json", "train-parent"),
    "parent": ("parent checkpoint", "train-parent"),
    "derived": ("derived dataset", "derive"),
    "gate": ("gate", "fit-gate --beta 0.0005"),
}
_ORDER = ("config", "parent", "derived", "gate")

_CONFIG_HINT = "train-parent writes it: restore it, or train again in a new --run"

_REPORT_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


class RunDir:
    """Paths of one run and the checks that say which step is missing.

    Args:
        root: the run directory (need not exist yet; it is created on the first write).
    """

    def __init__(self, root: str | os.PathLike = DEFAULT_RUN):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # --- paths -----------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def parent_path(self) -> Path:
        return self.checkpoints_dir / "parent.safetensors"

    @property
    def last_path(self) -> Path:
        return self.checkpoints_dir / "last.safetensors"

    @property
    def pending_last_path(self) -> Path:
        """Where train-parent writes a state until the next iteration proves it finite."""
        return self.checkpoints_dir / "last.pending.safetensors"

    @property
    def derived_path(self) -> Path:
        return self.root / "derived.safetensors"

    @property
    def gates_dir(self) -> Path:
        return self.root / "gates"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def log_path(self) -> Path:
        return self.root / "log.jsonl"

    def gate_path(self, *, beta: float, K: int, loss: str, temperature: float | None = None,
                  features: str = "backbone") -> Path:
        """``gates/gate_beta{beta}_K{K}_{loss}[_T{temperature}][_exit2].safetensors`` (exact numbers)."""
        return self.gates_dir / (gate_stem(beta=beta, K=K, loss=loss, temperature=temperature,
                                           features=features) + ".safetensors")

    def report_path(self, name: str) -> Path:
        """``reports/eval_{name}.json``; ``name`` is one plain name
        (:func:`adaseg.storage.names.check_name`) of letters, digits and ``_.+-``."""
        from adaseg.storage.names import BadNameError, check_name

        if not _REPORT_NAME.match(name):
            raise RunDirError(f"report name {name!r} may only hold letters, digits and _ . + -")
        try:
            check_name(name, what="report name")
        except BadNameError as exc:
            raise RunDirError(str(exc)) from None
        return self.reports_dir / f"eval_{name}.json"

    def check_report_slot(self, name: str) -> Path:
        """``report_path(name)`` after checking that neither it nor its parts file is a folder
        or a link (the user's, never replaced: :class:`RunDirError` before any work)."""
        from adaseg.eval.image_parts import parts_path_for

        path = self.report_path(name)
        for p in (path, parts_path_for(path)):
            if p.is_symlink() or (p.exists() and not p.is_file()):
                raise RunDirError(f"{p} is a folder or a link, not a file adaseg wrote: move it away, or choose "
                                  "another --name")
        return path

    # --- presence --------------------------------------------------------------------
    def has(self, step: str) -> bool:
        if step == "config":
            return self.config_path.is_file()
        if step == "parent":
            return self.parent_path.is_file()
        if step == "derived":
            return self.derived_path.is_file()
        if step == "gate":
            return bool(self.gate_files())
        raise ValueError(f"unknown step {step!r}; one of {_ORDER}")

    def command_for(self, step: str) -> str:
        """The command line that produces ``step``'s artefact in this run directory."""
        _, command = _STEPS[step]
        return f"adaseg {command} --run {self.root}"

    def require(self, *steps: str) -> None:
        """Raise :class:`MissingStepError` for the earliest missing artefact among ``steps``.

        The earliest is reported first because running a later command cannot succeed
        before it (derive needs the parent).
        """
        for step in sorted(steps, key=_ORDER.index):
            if not self.has(step):
                what, _ = _STEPS[step]
                raise MissingStepError(f"{self.root} has no {what}: run `{self.command_for(step)}` first")

    def gate_files(self) -> list[Path]:
        """Gate files in ``gates/``, sorted by name."""
        if not self.gates_dir.is_dir():
            return []
        return sorted(p for p in self.gates_dir.glob("gate_*.safetensors") if p.is_file())

    # --- config and reports ----------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> Path:
        """Write config.json with its content hash (:func:`adaseg.storage.integrity.seal_json`)."""
        from adaseg.storage.integrity import seal_json

        return atomic_write_json(self.config_path, seal_json(config))

    def read_config(self) -> dict[str, Any]:
        import json

        self.require("config")
        try:
            config = json.loads(self.config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunDirError(f"{self.config_path} is not valid JSON ({exc}); {_CONFIG_HINT}") from None
        except OSError as exc:
            raise RunDirError(f"{self.config_path} cannot be read ({exc.strerror or exc})") from None
        if not isinstance(config, dict):
            kind = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number",
                    type(None): "null"}.get(type(config), type(config).__name__)
            raise RunDirError(f"{self.config_path} holds {kind}, not a JSON object; {_CONFIG_HINT}")
        from adaseg.storage.integrity import HASH_KEY, IntegrityError, check_json

        try:
            # a config.json written before content hashes records none and is read as it is
            check_json(config, path=self.config_path, hint=_CONFIG_HINT)
        except IntegrityError as exc:
            raise RunDirError(str(exc)) from None
        return {k: v for k, v in config.items() if k != HASH_KEY}

    def write_report(self, name: str, report: dict[str, Any]) -> Path:
        """Write ``reports/eval_<name>.json`` with its content hash, checked on every reuse."""
        from adaseg.storage.integrity import seal_json

        return atomic_write_json(self.report_path(name), seal_json(report))


def recreate_hint(path: str | os.PathLike) -> str:
    """What to do about a corrupt or unusable file at ``path``: the command that re-creates it,
    read from where it lies in a run directory (see the module docstring's layout)."""
    path = Path(path)
    if path.parent.name == "checkpoints":
        root = path.parent.parent
        if path.name == "parent.safetensors":
            return (f"re-create it from the training state with `adaseg train-parent --resume --run {root}`, "
                    "or train again in a new --run")
        if path.name == "last.safetensors":
            return f"the training cannot resume from it: train again in a new --run (or delete {path.parent} first)"
    if path.name == "derived.safetensors":
        return f"run `adaseg derive --run {path.parent}` again"
    if path.parent.name == "gates":
        return f"fit it again with `adaseg fit-gate --run {path.parent.parent}` and the settings in its name"
    if path.parent.name == "assets":
        return "reinstall adaseg (a shipped file is damaged)"
    from adaseg.storage.checkpoint import GENERIC_HINT

    return GENERIC_HINT


def gate_stem(*, beta: float, K: int, loss: str, temperature: float | None = None, features: str = "backbone") -> str:
    """File stem naming a gate's trade-off settings exactly, e.g. ``gate_beta0.0005_K6_hard-ce``.

    Numbers are exact (:func:`adaseg.exact.exact_float`): ``--beta 0.00050000001`` names
    another file than ``--beta 0.0005``. (The fit's optimiser settings -- epochs, lr, batch
    size, seed -- are recorded inside the gate's file; refitting one trade-off replaces it.)
    A gate reading other features than the paper's pooled backbone tokens (``fit-gate
    --features exit2``) ends in ``_{features}``, so it never replaces the paper's gate.
    """
    from adaseg.exact import exact_float

    stem = f"gate_beta{exact_float(beta)}_K{K}_{loss}"
    if temperature is not None:
        stem += f"_T{exact_float(temperature)}"
    if features != "backbone":
        stem += f"_{features}"
    return stem
