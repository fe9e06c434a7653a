"""``adaseg sweep``: many operating points of one parent, each an ordinary eval report.

Every point is evaluated with :func:`adaseg.engine.evaluate.evaluate` under the
:class:`~adaseg.engine.evaluate.EvalSettings` that ``adaseg eval`` builds for the same
options, and written under the same name (``reports/eval_<name>.json``, with its per-image
parts), so a sweep row and a separate ``adaseg eval`` of that setting are one report. A
report already there is reused, not recomputed, when it was made with the same settings,
the same parent (fingerprint and content hash), the same gate file content, device and
thread count (images/s depends on the last two), and its per-image parts are present.

The points (:mod:`adaseg.analysis.sweep_grid`), the statistics (:mod:`adaseg.analysis.sweep_stats`),
the front and budgets (:mod:`adaseg.analysis.pareto`) and the plots
(:mod:`adaseg.analysis.sweep_plot`) live beside this module; this one runs the points.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from adaseg.runs.run_dir import recreate_hint
from adaseg.engine.evaluate import EvalSettingError, EvalSettings, evaluate
from adaseg.eval.tasks.registry import suite_named, sweep_keys
from adaseg.runs.derived import load_run_derived
from adaseg.models.adaptive.deferred import GATE_FEATURES
from adaseg.runs.run_dir import RunDir, RunDirError
from adaseg.analysis.sweep_grid import (DEFAULT_GRID_RATIOS, DEFAULT_GRID_STAGES, PointSpec, base_points, dedupe,
                                       greedy_pause_search)

# Report keys of the quality metrics a row carries (those the report has): every task's.
QUALITY_KEYS = sweep_keys()


class SweepError(ValueError):
    """A sweep setting is invalid; ``param`` names the option (``exits``, ``betas``, ...)."""

    def __init__(self, param: str | None, message: str):
        super().__init__(message)
        self.param = param


@dataclass
class SweepSettings:
    """What to sweep; see ``adaseg sweep --help``. ``exits`` may hold ``"all"`` or numbers."""

    exits: str = "all"
    betas: tuple[float, ...] = ()
    pauses: tuple[str, ...] = ()
    pause_grid: bool = False
    grid_layers: tuple[int, ...] | None = None
    grid_ratios: tuple[float, ...] = DEFAULT_GRID_RATIOS
    grid_stages: int = DEFAULT_GRID_STAGES
    modes: tuple[str, ...] = ("entropy",)
    limit: int | None = None
    seed: int = 0
    data: str | None = None  # another dataset's val split, as eval --data
    flops_images: int | None = None  # FLOPs counted on the first N images, as eval --flops-images
    pause_output: str = "decoder"  # every pause point's, as eval --pause-output (aux: PAUMER's early exit)
    oracle: bool = False  # also the oracle gate at every beta (eval --gate oracle --beta B), a bound
    features: str = "backbone"  # the gates' input, as fit-gate --features (exit2: decided after layer 2)

    def to_json(self) -> dict[str, Any]:
        return {"exits": self.exits, "betas": list(self.betas), "pauses": list(self.pauses),
                "pause_grid": self.pause_grid, "grid_layers": None if self.grid_layers is None else list(self.grid_layers),
                "grid_ratios": list(self.grid_ratios), "grid_stages": self.grid_stages, "modes": list(self.modes),
                "limit": self.limit, "seed": self.seed, "data": self.data, "flops_images": self.flops_images,
                "pause_output": self.pause_output, "oracle": self.oracle, "features": self.features}


@dataclass
class SweepPoint:
    """A point and its report: ``report`` is the report JSON, ``path`` its file."""

    spec: PointSpec
    settings: EvalSettings
    path: Path
    report: dict[str, Any]
    reused: bool
    parts: Any = None  # its ImageParts once read or computed (verified), else None


@dataclass
class SweepResult:
    points: list[SweepPoint]
    greedy: dict[str, list[dict]] = field(default_factory=dict)  # mode -> stages
    gates: dict[str, str] = field(default_factory=dict)  # beta text -> gate file
    fitted: list[str] = field(default_factory=list)  # gate files fitted by this sweep


# --------------------------------------------------------------------------------------
# Checks before any work
# --------------------------------------------------------------------------------------


@dataclass
class Parent:
    """What the sweep needs to know about the run's parent before evaluating anything."""

    depth: int
    fingerprint: str
    content_hash: str | None
    pause_refusal: str | None = None  # why the model cannot pause tokens (every --pause refused), or None
    early_exit_refusal: str | None = None  # why the model has no --pause-output aux, or None
    exit2_refusal: str | None = None  # why the model cannot give an exit-2 gate its input, or None


def read_parent(run: RunDir) -> Parent:
    """The parent's depth and identity (the model is built once here; each point's
    evaluation loads it again, as ``adaseg eval`` does)."""
    from adaseg.runs.parent import load_parent

    model, info = load_parent(run.parent_path, device="cpu")
    return Parent(depth=int(model.depth), fingerprint=info["fingerprint"], content_hash=info["content_hash"],
                  early_exit_refusal=_refusal(model.check_early_exit), exit2_refusal=model.exit2_refusal(),
                  pause_refusal=_refusal(model.check_pausing))


def _refusal(check) -> str | None:
    """``check()``'s ValueError message (a model's one-line refusal), or None when it passes."""
    try:
        check()
    except ValueError as exc:
        return str(exc)
    return None


def check_settings(settings: SweepSettings, parent: Parent) -> list[int]:
    """Validate ``settings`` against the parent; the exits to sweep. Raises :class:`SweepError`."""
    from adaseg.models.adaptive.plan import PausePlan
    from adaseg.choices import PAUSE_MODES
    from adaseg.analysis.sweep_grid import parse_exits

    try:
        exits = parse_exits(settings.exits, parent.depth)
    except ValueError as exc:
        raise SweepError("exits", f"--exits {settings.exits}: {exc}") from None
    for b in settings.betas:
        if not (math.isfinite(b) and b >= 0):
            raise SweepError("betas", f"--betas: {b!r} must be a finite number >= 0")
    for m in settings.modes:
        if m not in PAUSE_MODES:
            raise SweepError("modes", f"--modes: {m!r} is not one of {', '.join(PAUSE_MODES)}")
    if parent.pause_refusal is not None and (settings.pauses or settings.pause_grid):
        option = f"--pause {settings.pauses[0]}" if settings.pauses else "--pause-grid"
        raise SweepError("pause-grid" if not settings.pauses else "pause", f"{option}: {parent.pause_refusal}")
    for spec in settings.pauses:
        try:
            PausePlan.parse(spec).check_depth(parent.depth)
        except ValueError as exc:
            raise SweepError("pause", f"{spec}: {exc}") from None
    if settings.pause_grid:
        for layer in settings.grid_layers or ():
            if not 1 <= layer < parent.depth:
                raise SweepError("grid-layers", f"--grid-layers: pause layer {layer} is outside 1..{parent.depth - 1} "
                                                f"(the parent has {parent.depth} encoder layers)")
        for r in settings.grid_ratios:
            if not 0.0 < r < 1.0:
                raise SweepError("grid-ratios", f"--grid-ratios: {r!r} is not in (0, 1)")
        if settings.grid_stages < 1:
            raise SweepError("grid-stages", f"--grid-stages must be >= 1, got {settings.grid_stages}")
    if settings.pause_output != "decoder":
        from adaseg.choices import PAUSE_OUTPUTS

        if settings.pause_output not in PAUSE_OUTPUTS:
            raise SweepError("pause-output", f"--pause-output: {settings.pause_output!r} is not one of "
                                             f"{', '.join(PAUSE_OUTPUTS)}")
        if not (settings.pauses or settings.pause_grid):
            raise SweepError("pause-output", f"--pause-output {settings.pause_output} labels paused tokens by their "
                                             "auxiliary decoder: it needs --pause SPEC or --pause-grid")
        if parent.early_exit_refusal is not None:
            raise SweepError("pause-output", parent.early_exit_refusal)
    if (settings.pauses or settings.pause_grid) and not settings.modes:
        raise SweepError("modes", "--modes is empty: name at least one of entropy,random")
    if settings.oracle and not settings.betas:
        raise SweepError("oracle", "--oracle evaluates the oracle gate at each of --betas: give --betas B,...")
    if settings.features not in GATE_FEATURES:
        raise SweepError("features", f"--features: {settings.features!r} is not one of {', '.join(GATE_FEATURES)}")
    if settings.features != "backbone":
        if not settings.betas:
            raise SweepError("features", f"--features {settings.features} chooses the gates' input: it needs --betas B,...")
        if parent.exit2_refusal is not None:
            raise SweepError("features", f"--features {settings.features}: {parent.exit2_refusal}")
    return exits


def check_oracle(run: RunDir, settings: SweepSettings, *, device: torch.device) -> None:
    """With ``--oracle``, refuse before any work what ``adaseg eval --gate oracle`` would refuse
    (no val Step B, one of another parent, dataset or images): the first oracle point is
    prepared (parent, dataset and the oracle's exits loaded and checked) and dropped."""
    from adaseg.engine.evaluate import prepare

    if not settings.oracle:
        return
    spec = PointSpec(beta=settings.betas[0], oracle=True, origin="oracle")
    try:
        prepare(run, eval_settings(spec, None, limit=settings.limit, seed=settings.seed, data=settings.data,
                                   flops_images=settings.flops_images), device=device)
    except EvalSettingError as exc:
        raise SweepError("oracle", f"--oracle: {exc}") from None
    except RunDirError as exc:
        raise SweepError("oracle", f"--oracle: {exc}") from None


# --------------------------------------------------------------------------------------
# Gates
# --------------------------------------------------------------------------------------


def gate_for_beta(run: RunDir, beta: float, depth: int, features: str = "backbone") -> Path:
    """Where the sweep's gate for ``beta`` lives: ``adaseg fit-gate --beta B [--features F]``'s
    file (K = full depth, hard-ce; ``..._exit2`` for exit-2 features)."""
    return run.gate_path(beta=beta, K=depth, loss="hard-ce", features=features)


def missing_gates(run: RunDir, betas: Sequence[float], depth: int, features: str = "backbone") -> list[float]:
    return [b for b in betas if not gate_for_beta(run, b, depth, features).is_file()]


def require_derived_for(run: RunDir, missing: Sequence[float], features: str = "backbone") -> None:
    """A missing gate is fitted from Step B's data: refuse before any work when there is none,
    or when it lacks the gate input ``features`` (an exit-2 gate from a derived file written
    before exit-2 features, or from a parent that cannot provide them)."""
    from adaseg.exact import exact_float
    from adaseg.runs.derived import DerivedDatasetError, gate_inputs

    if missing and not run.has("derived"):
        betas = ",".join(exact_float(b) for b in missing)
        raise SweepError(None, f"no gate for beta {betas} in {run.gates_dir} and {run.root} has no derived dataset "
                                  f"to fit one from: run `adaseg derive --run {run.root}` first")
    if missing and features != "backbone":
        try:
            gate_inputs(load_run_derived(run, check_parent=True), features, run_hint=f"adaseg derive --run {run.root}")
        except DerivedDatasetError as exc:
            raise SweepError("features", str(exc)) from None


def check_combinations(run: RunDir, settings: SweepSettings, parent: Parent) -> None:
    """Refuse, before any work, a gate x pause combination no image could pause in: a pause
    layer at or after the gate's last exit (the gate file's exits, or for a gate still to be
    fitted the derived dataset's), and, for exit-2 gates, a pause before their decision after
    layer 2, as ``adaseg eval`` would refuse them."""
    from adaseg.models.adaptive.deferred import EXIT2_LAYER, gate_pause_refusal
    from adaseg.models.adaptive.plan import PausePlan
    from adaseg.storage.checkpoint import read_checkpoint_meta

    if not settings.betas or not settings.pauses:
        return
    derived_exits = None
    for b in settings.betas:
        path = gate_for_beta(run, b, parent.depth, settings.features)
        if path.is_file():
            exits = [int(e) for e in read_checkpoint_meta(path, hint=recreate_hint(path)).config["exits"]]
        else:
            if derived_exits is None:
                derived_exits = load_run_derived(run, check_parent=True).exit_list
            exits = derived_exits
        for spec in settings.pauses:
            late = [layer for layer, _ in PausePlan.parse(spec).stages if layer >= max(exits)]
            if late:
                raise SweepError("pause", f"{spec}: pause layer {late[0]} is not below the last exit {max(exits)} "
                                          f"of the gate for beta {b} (exits {exits}): no image would pause there")
            early = [layer for layer, _ in PausePlan.parse(spec).stages if layer < EXIT2_LAYER]
            if settings.features == "exit2" and early:
                raise SweepError("pause", f"{spec}: {gate_pause_refusal(early[0], EXIT2_LAYER)}")


def check_image_counts(run: RunDir, settings: SweepSettings) -> None:
    """Refuse, before any work, ``--limit`` above the val images or ``--flops-images`` above the
    images evaluated, as ``adaseg eval`` does (:func:`adaseg.engine.evaluate.check_counts`):
    every point's report name says ``limitN`` / ``flopsN`` and must be true."""
    from adaseg.engine.evaluate import check_counts
    from adaseg.runs.run_data import build_run_dataset

    if settings.limit is None and settings.flops_images is None:
        return
    dataset, spec = build_run_dataset(run.read_config(), settings.data, "val")
    try:
        check_counts(EvalSettings(limit=settings.limit, flops_images=settings.flops_images), len(dataset), spec)
    except EvalSettingError as exc:
        raise SweepError(exc.param, str(exc)) from None


def fit_missing_gates(run: RunDir, missing: Sequence[float], *, features: str = "backbone",
                      reporter=None) -> list[Path]:
    """Fit and save the gates for ``missing`` betas with ``adaseg fit-gate``'s defaults (and
    ``--features features``)."""
    from adaseg.engine.fit_gate import fit_gate, save_gate

    if not missing:
        return []
    derived = load_run_derived(run, check_parent=True)
    paths = []
    for b in missing:
        path = save_gate(run, fit_gate(derived, beta=b, features=features), derived)
        if reporter is not None:
            reporter.info(f"sweep: fitted the missing gate for beta {b} from {run.derived_path}: {path}")
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------
# One point
# --------------------------------------------------------------------------------------


def eval_settings(spec: PointSpec, gate: Path | None, *, limit: int | None, seed: int, data: str | None = None,
                  flops_images: int | None = None, pause_output: str = "decoder") -> EvalSettings:
    """The EvalSettings ``adaseg eval`` builds for this point's options (``--seed`` is only
    given, and only changes the report, for random pausing; ``pause_output`` only for a
    point that pauses)."""
    from adaseg.models.adaptive.plan import PausePlan

    random = spec.pause is not None and spec.mode == "random"
    if spec.oracle:  # the oracle gate: no gate file, no exit, no pausing
        return EvalSettings(oracle_beta=float(spec.beta), limit=limit, data=data, flops_images=flops_images)
    return EvalSettings(gate=None if gate is None else str(gate), exit=spec.exit,
                        pause=PausePlan.parse(spec.pause) if spec.pause else None,
                        pause_mode=spec.mode if spec.pause else "entropy", limit=limit,
                        seed=seed if random else EvalSettings().seed, data=data, flops_images=flops_images,
                        pause_output=pause_output if spec.pause else "decoder")


def eval_command(run: RunDir, settings: EvalSettings) -> str:
    """The ``adaseg eval`` command line that writes this point's report."""
    from adaseg.exact import exact_float

    parts = ["adaseg eval", f"--run {run.root}"]
    if settings.oracle_beta is not None:
        parts.append(f"--gate oracle --beta {exact_float(settings.oracle_beta)}")
    else:
        parts.append(f"--gate {settings.gate}" if settings.gate else ("--gate none" if settings.exit is None else ""))
    if settings.exit is not None:
        parts.append(f"--exit {settings.exit}")
    if settings.pause is not None:
        parts.append(f"--pause {settings.pause}")
        if settings.pause_mode != "entropy":
            parts.append(f"--pause-mode {settings.pause_mode}")
        if settings.pause_mode == "random" and settings.seed != EvalSettings().seed:
            parts.append(f"--seed {settings.seed}")
        if settings.pause_output != "decoder":
            parts.append(f"--pause-output {settings.pause_output}")
    if settings.limit is not None:
        parts.append(f"--limit {settings.limit}")
    if settings.flops_images is not None:
        parts.append(f"--flops-images {settings.flops_images}")
    if settings.data is not None:
        parts.append(f"--data {settings.data}")
    return " ".join(p for p in parts if p)


# Report settings that must match for a report to be reused ("flops_images" is stored as the
# count actually used; the requested one is "requested_flops_images").
_SAME_SETTINGS = ("exit", "pause", "pause_mode", "batch_size", "limit", "warmup", "timed", "seed", "data")


def reusable(path: Path, settings: EvalSettings, parent: Parent, gate_hash: str | None, device: torch.device,
             *, need_parts: bool, images: Callable[[], str] | None = None) -> tuple[dict, Any] | None:
    """(report, its verified ImageParts or None without ``need_parts``) when the report at
    ``path`` may stand for ``settings`` (see the module docstring), else None: no report
    there, or an intact one made otherwise (other settings, parent, gate, device, threads or
    images -- ``images()`` gives the identity of the images the point would score, see
    :func:`adaseg.runs.run_data.images_identity` -- or written before reports were hashed, or
    its parts are not the ones it records, as after a crash between the two writes): it is
    then evaluated again and replaced.

    A report that fails its own content hash (edited or damaged after adaseg wrote it, e.g.
    its figures or its parts record changed by hand) or whose parts file is corrupt is
    refused: :class:`~adaseg.eval.image_parts.PartsError` naming the file, and nothing is
    overwritten, so a sweep never builds on, nor silently erases, a file it cannot trust."""
    from adaseg.eval.image_parts import PartsMismatch, load_parts, read_report
    from adaseg.runs.run_data import IMAGES_KEY
    from adaseg.storage.integrity import HASH_KEY

    if not path.exists() and not path.is_symlink():
        return None
    _refuse_non_file(path)
    report = read_report(path)  # PartsError: not a report, or fails its content hash
    if HASH_KEY not in report:
        return None  # an older adaseg's report: nothing vouches for it, evaluate again
    s, info = report["settings"], report["info"]
    if not isinstance(s, dict) or not isinstance(info, dict):
        return None
    want = settings.to_json()
    if any(s.get(k) != want[k] for k in _SAME_SETTINGS):
        return None
    if s.get("pause_output", "decoder") != want["pause_output"]:  # reports before early exit: the decoder's
        return None
    if s.get("oracle_beta") != want["oracle_beta"]:  # an oracle report (eval --gate oracle --name ...) is no point
        return None
    if s.get("requested_flops_images") != settings.flops_images or bool(s.get("gate")) != bool(settings.gate):
        return None
    if info.get("parent_fingerprint") != parent.fingerprint or info.get("parent_content_sha256") != parent.content_hash:
        return None
    if info.get("gate_content_sha256") != gate_hash:
        return None
    if info.get("device") != str(device) or info.get("threads") != torch.get_num_threads():
        return None
    if images is not None and info.get(IMAGES_KEY) != images():
        return None  # the same --data path now holds other images (or other labels)
    if need_parts:
        try:
            parts = load_parts(path, require_hash=True)  # handed on: the analysis need not hash it again
        except PartsMismatch:
            return None  # intact files that do not go together: evaluate again
        return report, parts
    return report, None


def _refuse_non_file(path: Path) -> None:
    """A folder or a link where a point's report belongs is the user's: refused, never replaced."""
    from adaseg.eval.image_parts import PartsError

    if path.is_symlink() or not path.is_file():
        raise PartsError(f"{path} is a folder or a link, not an eval report adaseg wrote: move it away")


def _gate_hash(gate: Path | None) -> str | None:
    """The gate file's content hash, verified on its bytes (a gate damaged after a report was
    made is refused here, one line naming it, instead of matching the hash in its header)."""
    if gate is None:
        return None
    from adaseg.storage.checkpoint import load_checkpoint

    return load_checkpoint(gate, hint=recreate_hint(gate))[1].content_hash


def save_point_report(run: RunDir, name: str, report) -> Path:
    """Write one point's report as ``adaseg eval`` does (JSON + per-image parts)."""
    from adaseg.engine.evaluate import save_report

    return save_report(run, name, report)


class PointRunner:
    """Evaluates (or reuses) points, each once per sweep, with ``evaluate_fn`` (default
    :func:`adaseg.engine.evaluate.evaluate`)."""

    def __init__(self, run: RunDir, parent: Parent, gates: dict[float, Path], *, limit: int | None, seed: int,
                 device: torch.device, reporter=None, evaluate_fn: Callable | None = None, need_parts: bool = True,
                 data: str | None = None, flops_images: int | None = None, pause_output: str = "decoder"):
        self.run, self.parent, self.gates = run, parent, gates
        self.pause_output = pause_output
        self.limit, self.seed, self.device, self.reporter = limit, seed, device, reporter
        self.data, self.flops_images = data, flops_images
        self.evaluate_fn = evaluate_fn
        self.need_parts = need_parts
        self.points: dict[tuple, SweepPoint] = {}
        self._images: str | None = None

    def images(self) -> str:
        """The identity of the images every point scores (computed once, when a report is
        first considered for reuse): the val split of the run's dataset or ``--data``, its
        first ``--limit`` images."""
        if self._images is None:
            from adaseg.runs.run_data import build_run_dataset, images_identity

            dataset, _ = build_run_dataset(self.run.read_config(), self.data, "val")
            n = len(dataset) if self.limit is None else min(self.limit, len(dataset))
            self._images = images_identity(dataset, n)
        return self._images

    def settings_of(self, spec: PointSpec) -> EvalSettings:
        gate = self.gates[spec.beta] if spec.beta is not None and not spec.oracle else None
        return eval_settings(spec, gate, limit=self.limit, seed=self.seed, data=self.data,
                             flops_images=self.flops_images, pause_output=self.pause_output)

    def verify_existing(self, specs: Sequence[PointSpec]) -> None:
        """Before any work: refuse (:class:`~adaseg.eval.image_parts.PartsError`,
        :class:`~adaseg.storage.checkpoint.CheckpointError`) a report already at one of
        ``specs``' names that fails its content hash or whose parts file is corrupt, and a
        gate file among the sweep's that fails its own (see :func:`reusable`)."""
        from adaseg.eval.image_parts import PartsMismatch, load_parts, read_report
        from adaseg.storage.integrity import HASH_KEY

        for gate in dict.fromkeys(self.gates.values()):
            if gate.is_file():
                _gate_hash(gate)
        for spec in specs:
            try:
                path = self.run.check_report_slot(self.settings_of(spec).name())
            except RunDirError as exc:
                raise SweepError(None, str(exc).replace(", or choose another --name", "")) from None
            if not path.exists():
                continue
            if HASH_KEY in read_report(path) and self.need_parts:
                try:
                    load_parts(path, require_hash=True)
                except PartsMismatch:
                    pass  # stale, not damaged: evaluated again when reached

    def __call__(self, spec: PointSpec) -> SweepPoint:
        if spec.key() in self.points:
            return self.points[spec.key()]
        gate = self.gates[spec.beta] if spec.beta is not None and not spec.oracle else None
        settings = self.settings_of(spec)
        name = settings.name()
        path = self.run.report_path(name)
        found = reusable(path, settings, self.parent, _gate_hash(gate), self.device, need_parts=self.need_parts,
                         images=self.images)
        reused = found is not None
        report, parts = found if found is not None else (None, None)
        if report is None:
            if self.reporter is not None:
                self.reporter.info(f"sweep: evaluating {spec.label()} -> {path.name}")
            result = (self.evaluate_fn or evaluate)(self.run, settings, device=self.device, reporter=None)
            if result is None:  # not rank 0: nothing to write
                raise SweepError(None, "adaseg sweep runs in one process (not under torchrun)")
            result.settings["name"] = name
            path = save_point_report(self.run, name, result)
            report = json.loads(path.read_text())
            parts = getattr(result, "parts", None)
        elif self.reporter is not None:
            self.reporter.info(f"sweep: reusing {path.name} ({spec.label()})")
        point = SweepPoint(spec=spec, settings=settings, path=path, report=report, reused=reused, parts=parts)
        self.points[spec.key()] = point
        return point


def quality_key(report: dict) -> str:
    """The report's primary quality: the headline figure of its Step B quality evaluator (PQ
    for panoptic models on panoptic data, else mIoU)."""
    return suite_named(report["info"]["metric"]).quality.primary


def encoder_gflops(report: dict) -> float:
    return float(report["gflops"]["gflops"]["encoder"]["mean"])


def run_sweep(run: RunDir, settings: SweepSettings, parent: Parent, *, device: torch.device, reporter=None,
              evaluate_fn: Callable | None = None, need_parts: bool = True) -> SweepResult:
    """Evaluate (or reuse) every point; gates missing for ``settings.betas`` are fitted first.
    Call :func:`check_settings` and :func:`require_derived_for` before (they refuse bad input
    while nothing is written yet)."""
    exits = check_settings(settings, parent)
    gates = {b: gate_for_beta(run, b, parent.depth, settings.features) for b in settings.betas}
    runner = PointRunner(run, parent, gates, limit=settings.limit, seed=settings.seed, device=device,
                         reporter=reporter, evaluate_fn=evaluate_fn, need_parts=need_parts, data=settings.data,
                         flops_images=settings.flops_images, pause_output=settings.pause_output)
    base = base_points(exits, settings.betas, settings.pauses, settings.modes, depth=parent.depth,
                       oracle=settings.oracle)
    runner.verify_existing(base)  # a damaged report or gate is refused before anything is written
    missing = missing_gates(run, settings.betas, parent.depth, settings.features)
    fitted = fit_missing_gates(run, missing, features=settings.features, reporter=reporter)
    order: list[PointSpec] = []

    def take(spec: PointSpec) -> SweepPoint:
        try:
            point = runner(spec)
        except EvalSettingError as exc:
            raise SweepError(exc.param, f"{spec.label()}: {exc}") from None
        order.append(spec)
        return point

    for spec in base:
        take(spec)
    greedy: dict[str, list[dict]] = {}
    if settings.pause_grid:
        for mode in settings.modes:
            def measure(pause: str | None, mode=mode) -> tuple[float, float]:
                spec = PointSpec(pause=pause, mode=mode, origin="grid") if pause else PointSpec(origin="exits")
                rep = take(spec).report
                return encoder_gflops(rep), float(rep["metrics"][quality_key(rep)])

            stages = greedy_pause_search(measure, depth=parent.depth, layers=settings.grid_layers,
                                         ratios=settings.grid_ratios, max_stages=settings.grid_stages)
            greedy[mode] = [s.to_json() for s in stages]
    specs = dedupe(order)
    from adaseg.exact import exact_float

    return SweepResult(points=[runner.points[s.key()] for s in specs], greedy=greedy,
                       gates={exact_float(b): str(p) for b, p in gates.items()}, fitted=[str(p) for p in fitted])


def check_name(run: RunDir, name: str) -> Path:
    """``R/sweeps/<name>``: the name is one plain name of letters, digits and ``_.+-`` (as report
    names, :meth:`RunDir.report_path`); what is already there must be a sweep adaseg wrote (a
    folder holding ``sweep.json``, which the new sweep replaces), never a file, a link or a
    folder of the user's."""
    try:
        run.report_path(name)
    except RunDirError as exc:
        raise SweepError("name", str(exc).replace("report name", "sweep name")) from None
    sweeps = run.root / "sweeps"
    out = sweeps / name
    if sweeps.is_symlink() or (sweeps.exists() and not sweeps.is_dir()):
        raise SweepError(None, f"{sweeps} is not a folder adaseg wrote (a file or a link): move it away")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise SweepError("name", f"{out} is a file or a link, not a sweep folder: choose another --name or move it")
    if out.is_dir() and not (out / "sweep.json").is_file():
        raise SweepError("name", f"{out} is a folder without sweep.json, not a sweep adaseg wrote: choose another "
                                 "--name or move it")
    return out
