"""Evaluation on the val split: quality, per-image GFLOPs and images/s, for any mix of the
gate (per-image exits), a fixed exit and a pause plan.

Three passes, each measuring one thing:

1. **Quality** in batches of ``batch_size``, by the evaluators of the (model task, data task)
   pair (:mod:`adaseg.eval.tasks`): PQ / SQ / RQ (All, Things, Stuff) with panopticapi's
   rules, mIoU (Mask2Former's semantic inference), mask AP (pycocotools) for panoptic models
   on panoptic data; mIoU otherwise. With a gate each image's exit comes from the gate
   (a batch may mix exits), and the exits used are recorded.
2. **GFLOPs per image** (:mod:`adaseg.eval.flops`): each image alone under the FLOP counter,
   with the same gate / exit / pause plan, so the count is data dependent (its exit, its
   paused tokens, the gate, the auxiliary decoders, the deformable attention). Total and
   encoder scope, mean and std over the images.
3. **Images/s** (:mod:`adaseg.eval.throughput`): the model's forward (gate and pausing
   included; no post-processing) on batches of ``batch_size`` after warm-up, CUDA
   synchronised around the clock.

Under ``torchrun`` passes 1-2 are sharded over ranks and gathered on rank 0; the throughput
is rank 0's (per process).

The report keeps its per-image parts (:class:`adaseg.eval.image_parts.ImageParts`, from the
gathered per-image results), written beside it by :func:`save_report`, so that any two reports
on the same images can be compared later (:mod:`adaseg.eval.bootstrap`) without rerunning.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adaseg.eval.flops import FlopCounter, FlopStats
from adaseg.eval.image_parts import ImageParts, build_parts, parts_path_for
from adaseg.eval.throughput import measure_throughput
from adaseg.choices import PAUSE_MODES, PAUSE_OUTPUTS
from adaseg.utils.distributed import gather_in_order, shard_indices, world
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.runs.parent import load_parent
from adaseg.utils.progress import progress_or_none
from adaseg.runs.run_dir import RunDir
from adaseg.eval.scoring import Scorer
from adaseg.eval.tasks.base import Suite
from adaseg.eval.tasks.registry import suite_for


class EvalSettingError(ValueError):
    """An evaluation setting does not fit the parent; ``param`` names the option."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


@dataclass
class EvalSettings:
    """What to evaluate. ``gate``: a gate file path or None; ``exit``: fixed exit layer or None
    (full depth); ``pause``: a PausePlan or None; ``pause_output``: ``"decoder"`` or ``"aux"``
    (PAUMER's early exit: paused tokens labelled by their auxiliary decoder); ``data``: a ``--data`` spec to score on
    instead of the run's own dataset (same categories required), or None for the run's own.
    ``oracle_beta``: the oracle gate (``--gate oracle --beta B``): each image at its best exit
    under this beta by its own Step B row on the val images (``adaseg derive --split val``;
    :func:`adaseg.engine.gate_targets.oracle_exits`), the bound of any gate on this parent;
    exclusive with ``gate`` and ``exit``."""

    gate: str | None = None
    exit: int | None = None
    pause: Any = None
    pause_mode: str = "entropy"
    pause_output: str = "decoder"
    batch_size: int = 8
    limit: int | None = None
    flops_images: int | None = None
    warmup: int = 3
    timed: int = 10
    seed: int = 0
    data: str | None = None
    oracle_beta: float | None = None
    cuda_graph: bool = False  # the adaptive encoder as CUDA graphs (batches without padding; issue 23)

    def name(self, *, sizes_vary: bool = False) -> str:
        """Report name: what was run (gate stem, ``exit{K}`` or ``full``), then every setting
        that changes the report and differs from its default, each with its exact value
        (``--limit 4`` -> ``limit4``, a ratio 0.9999999 stays 0.9999999), in report-safe
        characters. Two evaluations share a name only when they share these settings, so one
        never overwrites the other's report. Left out, and recorded inside the report: how
        images/s is measured (``--warmup``, ``--timed``, device, threads).

        The batch size sets how much a batch of different-sized images is padded, which can
        move the metrics on such datasets; on equal-sized images it does not. So a batch size
        other than the default is in the name (``batch{N}``) where it matters: when the
        evaluated images differ in size (``sizes_vary``, found by :func:`prepare`)."""
        from pathlib import Path

        from adaseg.exact import exact_float

        if self.oracle_beta is not None:
            parts = [f"oracle_beta{exact_float(self.oracle_beta)}"]
        else:
            parts = [Path(self.gate).stem if self.gate else (f"exit{self.exit}" if self.exit else "full")]
        if self.pause is not None:
            parts.append("pause" + "+".join(f"{l}-{exact_float(r)}" for l, r in self.pause.stages))
            parts.append(self.pause_mode)
            if self.pause_mode == "random" and self.seed != _DEFAULTS.seed:
                parts.append(f"seed{self.seed}")  # the random draw depends on it
            if self.pause_output != _DEFAULTS.pause_output:
                parts.append("earlyexit")  # paused tokens labelled by their auxiliary decoder
        if self.limit is not None:
            parts.append(f"limit{self.limit}")
        if sizes_vary and self.batch_size != _DEFAULTS.batch_size:
            parts.append(f"batch{self.batch_size}")
        if self.flops_images is not None:
            parts.append(f"flops{self.flops_images}")
        if self.cuda_graph:
            parts.append("cudagraph")  # same settings, other images/s: its own report
        if self.data is not None:
            # Another dataset's report must not overwrite the run's own one of the same settings.
            from pathlib import PurePath

            stem = PurePath(self.data.rstrip("/\\")).name or self.data
            parts.append("data-" + re.sub(r"[^A-Za-z0-9_.+-]", "-", stem))
        return "_".join(parts)

    def to_json(self) -> dict[str, Any]:
        """Every setting, JSON-ready (the pause plan as its exact spec)."""
        return {"gate": self.gate, "exit": self.exit, "pause": None if self.pause is None else str(self.pause),
                "pause_mode": self.pause_mode, "pause_output": self.pause_output, "batch_size": self.batch_size, "limit": self.limit,
                "flops_images": self.flops_images, "warmup": self.warmup, "timed": self.timed, "seed": self.seed, "cuda_graph": self.cuda_graph,
                "data": self.data, "oracle_beta": self.oracle_beta}


_DEFAULTS = EvalSettings()


@dataclass
class EvalReport:
    """One evaluation. ``parts``: its per-image parts (not in the JSON; :func:`save_report`
    writes them beside it and records the file in ``parts_file``); ``intervals``: bootstrap
    intervals of its own figures (:func:`add_intervals`), or None."""

    settings: dict[str, Any]
    metrics: dict[str, Any]
    gflops: dict[str, Any]
    throughput: dict[str, Any]
    exits: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    parts: ImageParts | None = None
    parts_file: dict[str, str] | None = None
    intervals: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"settings": self.settings, "metrics": self.metrics, "gflops": self.gflops,
               "throughput": self.throughput, "exits": self.exits, "info": self.info}
        if self.parts_file is not None:
            out["parts"] = self.parts_file
        if self.intervals is not None:
            out["intervals"] = self.intervals
        return out


def save_report(run: RunDir, name: str, report: EvalReport) -> Path:
    """Write ``report`` as ``reports/eval_<name>.json`` and its per-image parts as
    ``reports/eval_<name>.parts.safetensors``, each atomically: the parts first, then the JSON
    recording their file name and content hash (so a report never names parts that are not
    there; a crash between the two leaves the old report, whose hash no longer matches, and
    :func:`adaseg.eval.image_parts.load_parts` says so). Sets ``settings["name"]``; returns the
    report's path. The caller holds the run's lock."""
    path = run.report_path(name)
    report.settings["name"] = name
    if report.parts is not None:
        parts_path = parts_path_for(path)
        digest = report.parts.save(parts_path)
        report.parts_file = {"file": parts_path.name, "content_sha256": digest}
    run.write_report(name, report.to_json())
    return path


INTERVAL_LEVEL = 0.90


def add_intervals(report: EvalReport, *, n_boot: int, seed: int = 0, level: float = INTERVAL_LEVEL) -> None:
    """Bootstrap intervals (``n_boot`` resamples of the report's images, ``seed``) of every
    figure of the report that is defined, into ``report.intervals``:
    ``{"n_boot", "seed", "level", "metrics": {key: Interval.to_json()}}``."""
    from adaseg.eval.bootstrap import metric_intervals

    if report.parts is None:
        raise ValueError("add_intervals: the report has no per-image parts")
    full = report.parts.metrics()
    keys = [k for k in report.parts.metric_names if full[k] is not None]
    intervals = metric_intervals(report.parts, keys, n_boot, seed, level)
    report.intervals = {"n_boot": n_boot, "seed": seed, "level": level,
                        "metrics": {k: v.to_json() for k, v in intervals.items()}}


def check_pause_reachable(plan, last_exit: int, why: str) -> None:
    """Refuse a pause stage no image can reach: after layer ``l >= last_exit`` every image has
    already left the encoder, so the stage would never pause a token while the report
    recorded it. (Below the last exit a stage takes effect on the images still running, e.g.
    a gate's images with later exits.) Raises :class:`EvalSettingError` for ``--pause``."""
    late = [layer for layer, _ in plan.stages if layer >= last_exit]
    if late:
        raise EvalSettingError(
            "pause", f"{plan}: pause layer {late[0]} is not below {why}: no image runs past layer {last_exit}, "
            "so this pause would never happen (pause earlier, or leave it out)"
        )


def _exits_arg(settings: EvalSettings, image_exits: list[int] | None = None):
    if image_exits is not None:  # the oracle: these images' exits, one per image
        return list(image_exits)
    return "gate" if settings.gate is not None else settings.exit


def _forward(model, images, mask, settings: EvalSettings, generator: torch.Generator | None = None,
             image_exits: list[int] | None = None):
    """The model on a batch; with ``cuda_graph``, a batch without padding runs its encoder as
    CUDA graphs (:class:`~adaseg.models.adaptive.cuda_graph.GraphedModel`, one per model and
    settings), anything else eagerly."""
    if settings.cuda_graph and image_exits is None and not torch.is_grad_enabled() and not bool(mask.any()):
        from adaseg.models.adaptive.cuda_graph import graphed_for

        return graphed_for(model, _adaptive_settings(settings, generator))(images)
    return _forward_eager(model, images, mask, settings, generator, image_exits)


def _adaptive_settings(settings: EvalSettings, generator, image_exits: list[int] | None = None) -> AdaptiveSettings:
    return AdaptiveSettings(exits=_exits_arg(settings, image_exits), pause=settings.pause,
                            pause_mode=settings.pause_mode, generator=generator, pause_output=settings.pause_output)


def _forward_eager(model, images, mask, settings: EvalSettings, generator: torch.Generator | None = None,
                   image_exits: list[int] | None = None):
    return model(images, mask, AdaptiveSettings(exits=_exits_arg(settings, image_exits), pause=settings.pause,
                                                pause_mode=settings.pause_mode, generator=generator,
                                                pause_output=settings.pause_output))


def _pause_generator(settings: EvalSettings, device: torch.device) -> torch.Generator | None:
    """The seeded generator random pausing draws from (its own, so the global RNG is left alone
    and a report depends only on ``--seed``); None when nothing is drawn."""
    if settings.pause is None or settings.pause_mode != "random":
        return None
    rank, _ = world()
    # Ranks draw from different streams: with one seed, every shard's first batch would
    # pause the same token positions.
    return torch.Generator(device=device).manual_seed(settings.seed + rank)


@dataclass
class Prepared:
    """What :func:`prepare` loaded and checked: the parent (``model``, ``info``), the gate's
    record (``gate_info``, None without a gate), the val ``dataset`` and its spec, the
    evaluators' ``suite``, the images evaluated (``n``) and FLOP-counted (``n_flops``);
    ``image_exits``: the oracle gate's exit per evaluated image (None without it)."""

    model: Any
    info: dict
    gate_info: dict | None
    dataset: Any
    data_spec: str
    suite: Suite
    n: int
    n_flops: int
    image_exits: list[int] | None = None
    sizes_vary: bool = False  # the evaluated images differ in size: the batch size can move figures


def check_counts(settings: EvalSettings, n_images: int, data_spec: str) -> tuple[int, int]:
    """``(n, n_flops)``: the images evaluated and FLOP-counted. ``--limit`` above the val
    images, or ``--flops-images`` above the images evaluated, is refused
    (:class:`EvalSettingError`), not clamped: the report's name says ``limitN`` / ``flopsN``
    and must be true."""
    if settings.limit is not None and settings.limit > n_images:
        raise EvalSettingError("limit", f"--limit {settings.limit} is more than the {n_images} val images of "
                                        f"{data_spec}: give at most {n_images}, or leave --limit out")
    n = n_images if settings.limit is None else settings.limit
    if settings.flops_images is not None and settings.flops_images > n:
        raise EvalSettingError("flops-images", f"--flops-images {settings.flops_images} is more than the {n} images "
                                               f"evaluated: give at most {n}, or leave --flops-images out")
    return n, n if settings.flops_images is None else settings.flops_images


def prepare(run: RunDir, settings: EvalSettings, *, device: torch.device) -> Prepared:
    """Load and check everything :func:`evaluate` needs, before any pass: the parent (verified),
    the settings against it (:class:`EvalSettingError` naming the option), the dataset and
    the image counts (:func:`check_counts`). ``adaseg eval`` calls it before logging its
    start, so every refusal comes before the run's log records a start."""
    from adaseg.runs.run_data import build_run_dataset

    run.require("config", "parent")
    config = run.read_config()
    model, info = load_parent(run.parent_path, device=device)
    gate_info = _apply_settings(model, info, settings, device)
    dataset, data_spec = build_run_dataset(config, settings.data, "val")
    suite = suite_for(model.task, dataset.meta.task)
    if model.task == "detection":
        # a detector's classes matched to the data's by name (e.g. the 91 COCO-id-indexed labels
        # of facebook/detr-resnet-50 onto coco-det's 80): its boxes are labelled in the data's
        # classes, or the pair is refused (adaseg.runs.class_match)
        from adaseg.runs.from_checkpoint import check_data_fits

        check_data_fits(model, dataset.meta, spec=data_spec, path=run.parent_path)
    n, n_flops = check_counts(settings, len(dataset), data_spec)
    image_exits = None if settings.oracle_beta is None else _oracle_exits(run, settings, dataset, data_spec, n)
    from adaseg.runs.run_data import sizes_differ

    # (the image headers are read only when the batch size could enter the report's name)
    vary = settings.batch_size != _DEFAULTS.batch_size and sizes_differ(dataset, n)
    return Prepared(model=model, info=info, gate_info=gate_info, dataset=dataset, data_spec=data_spec, suite=suite,
                    n=n, n_flops=n_flops, image_exits=image_exits, sizes_vary=vary)


def _oracle_exits(run: RunDir, settings: EvalSettings, dataset, data_spec: str, n: int) -> list[int]:
    """The oracle gate's exit for each of the first ``n`` val images, from the run's val-split
    Step B (same parent, same dataset, same images in the same order), or
    :class:`EvalSettingError`."""
    from adaseg.engine.gate_targets import oracle_exits
    from adaseg.runs.derived import DerivedDatasetError, load_val_derived

    try:
        derived = load_val_derived(run)
    except DerivedDatasetError as exc:
        raise EvalSettingError("gate", str(exc)) from None
    again = f"`adaseg derive --split val --run {run.root}" + ("" if settings.data is None else f" --data {settings.data}")
    if derived.info.get("data") != data_spec:
        raise EvalSettingError("gate", f"{run.root}'s val Step B scored {derived.info.get('data')!r}, not "
                                       f"{data_spec!r}: run {again}` first")
    ids = [str(dataset.records[i].image_id) for i in range(n)]
    if derived.num_images < n or derived.image_ids[:n] != ids:
        raise EvalSettingError("gate", f"{run.root}'s val Step B holds {derived.num_images} images that are not the "
                                       f"first {n} val images evaluated: run {again}` (with --limit at least {n}, "
                                       "or none) again")
    exits = oracle_exits(derived.quality[:n], derived.exits, float(settings.oracle_beta))
    if settings.pause is not None:
        check_pause_reachable(settings.pause, int(exits.max()), f"the oracle's last exit {int(exits.max())}")
    return [int(e) for e in exits.tolist()]


def evaluate(run: RunDir, settings: EvalSettings, *, device: torch.device, reporter=None,
             prepared: Prepared | None = None) -> EvalReport | None:
    """Evaluate the run's parent on the val split (see the module docstring); None off rank 0.
    ``prepared``: :func:`prepare`'s result for these settings (default: prepared here)."""
    from adaseg.runs.run_data import IMAGES_KEY, images_identity

    p = prepared if prepared is not None else prepare(run, settings, device=device)
    model, info, gate_info, dataset, data_spec, n = p.model, p.info, p.gate_info, p.dataset, p.data_spec, p.n
    task = model.task
    scorer = Scorer(dataset, metric=p.suite.metric)
    mine = shard_indices(n)
    generator = _pause_generator(settings, device)
    t0 = time.perf_counter()
    per_image = _quality_pass(model, dataset, mine, scorer, settings, device, generator, reporter, p.image_exits)
    n_flops = p.n_flops
    flop_mine = shard_indices(n_flops)
    counts = _flops_pass(model, dataset, flop_mine, settings, device, generator, p.image_exits)
    gathered = gather_in_order(mine, per_image)
    gathered_flops = gather_in_order(flop_mine, counts)
    if gathered is None:  # the throughput pass and the report are rank 0's
        return None
    timing_batch, throughput = _throughput_pass(model, dataset, n, settings, device, generator, reporter,
                                                p.image_exits)
    settings_json = {**settings.to_json(), "images": n, "flops_images": n_flops,
                     "name": settings.name(sizes_vary=p.sizes_vary),
                     "requested_flops_images": settings.flops_images, "timing_batch_size": timing_batch}
    report = _report(run, model, info, gate_info, settings_json, gathered, gathered_flops, throughput, scorer,
                     task=task, data_spec=data_spec, device=device, t0=t0)
    # which images were scored, by content: reuse (sweep) and compare refuse reports of other images
    report.info[IMAGES_KEY] = images_identity(dataset, n)
    return report


def _apply_settings(model, info: dict, settings: EvalSettings, device: torch.device) -> dict | None:
    """Check ``settings`` against the loaded parent and install the gate; the gate file's
    record (None without --gate). Raises :class:`EvalSettingError` naming the option."""
    gate_info = None
    if settings.gate is not None and settings.exit is not None:
        raise EvalSettingError("exit", "--exit and --gate are exclusive: a gate picks each image's exit")
    if settings.oracle_beta is not None:
        if settings.gate is not None or settings.exit is not None:
            raise EvalSettingError("gate", "the oracle gate picks each image's exit: it excludes a gate file and --exit")
        beta = settings.oracle_beta
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
            raise EvalSettingError("beta", f"--beta must be a finite number >= 0, got {beta!r}")
    if settings.exit is not None and not 1 <= settings.exit <= model.depth:
        raise EvalSettingError("exit", f"--exit {settings.exit} is outside the parent's layers 1..{model.depth}")
    if settings.gate is not None:
        from adaseg.runs.gate_file import load_gate

        gate, gate_info = load_gate(settings.gate, parent_fingerprint=info["fingerprint"])
        try:
            model.set_gate(gate.to(device))
        except ValueError as exc:
            raise EvalSettingError("gate", f"{settings.gate}: {exc}") from None
        if settings.cuda_graph and gate.features != "backbone":
            raise EvalSettingError("cuda-graph", f"{settings.gate} decides after layer {gate.decide_after}, inside "
                                                 "the encoder loop (a host read): it cannot run as CUDA graphs")
    if settings.pause is not None:
        from adaseg.runs.from_checkpoint import UntrainedError, check_pause_loaded

        try:  # a model whose encoder cannot pause (rt) refuses every pause plan
            model.check_pausing()
        except ValueError as exc:
            raise EvalSettingError("pause", f"--pause {settings.pause}: {exc}") from None
        try:  # entropy pausing needs trained auxiliary decoders (an imported model has none)
            check_pause_loaded(info, settings.pause, settings.pause_mode, info.get("path", "the parent"))
        except UntrainedError as exc:
            raise EvalSettingError("pause", str(exc)) from None
        try:
            settings.pause.check_depth(model.depth)
        except ValueError as exc:
            raise EvalSettingError("pause", f"{settings.pause}: {exc}") from None
        if settings.exit is not None:
            check_pause_reachable(settings.pause, settings.exit, f"--exit {settings.exit}")
        elif gate_info is not None:
            exits = [int(e) for e in gate_info["config"]["exits"]]
            check_pause_reachable(settings.pause, max(exits), f"the gate's last exit {max(exits)} (exits {exits})")
            try:
                model.check_gate_pause(AdaptiveSettings(exits="gate", pause=settings.pause))
            except ValueError as exc:
                raise EvalSettingError("pause", f"--pause {settings.pause}: {exc}") from None
    _check_pause_output(model, settings)
    if settings.pause_mode not in PAUSE_MODES:
        raise EvalSettingError("pause-mode", f"--pause-mode must be one of {', '.join(PAUSE_MODES)}, "
                                             f"got {settings.pause_mode!r}")
    return gate_info


def _check_pause_output(model, settings: EvalSettings) -> None:
    """Refuse an early-exit output (``--pause-output aux``) that cannot take effect or that the
    model does not have, as :class:`EvalSettingError` for ``--pause-output``."""
    if settings.pause_output not in PAUSE_OUTPUTS:
        raise EvalSettingError("pause-output", f"--pause-output must be one of {', '.join(PAUSE_OUTPUTS)}, "
                                               f"got {settings.pause_output!r}")
    if settings.pause_output == "decoder":
        return
    if settings.pause is None:
        raise EvalSettingError("pause-output", "--pause-output aux labels paused tokens by their auxiliary "
                                               "decoder: it needs --pause (e.g. --pause 3:0.4)")
    try:
        model.check_early_exit()
    except ValueError as exc:
        raise EvalSettingError("pause-output", str(exc)) from None


def _quality_pass(model, dataset, mine: list[int], scorer: Scorer, settings: EvalSettings,
                  device: torch.device, generator: torch.Generator | None, reporter,
                  image_exits: list[int] | None = None) -> list[dict]:
    """Pass 1: this rank's images ``mine`` through the model in batches, scored one by one
    (``image_exits``: the oracle's exit of every image, indexed by dataset index)."""
    from adaseg.data import collate

    per_image: list[dict] = []
    # The progress task records "ok": false when the loop is interrupted or fails.
    with progress_or_none(reporter, total=len(mine), description="eval", unit="img") as progress:
        for start in range(0, len(mine), settings.batch_size):
            idx = mine[start : start + settings.batch_size]
            batch = collate([dataset[i] for i in idx])
            with torch.no_grad():
                out = _forward(model, batch["images"].to(device), batch["padding_mask"].to(device), settings,
                               generator, _take(image_exits, idx))
            per_image.extend(_score_batch(model, out, batch, idx, scorer))
            if progress is not None:
                progress.update(len(idx))
    return per_image


def _take(image_exits: list[int] | None, idx: list[int]) -> list[int] | None:
    return None if image_exits is None else [image_exits[i] for i in idx]


def _flops_pass(model, dataset, flop_mine: list[int], settings: EvalSettings, device: torch.device,
                generator: torch.Generator | None, image_exits: list[int] | None = None) -> list:
    """Pass 2: the FLOPs of each image in ``flop_mine``, counted one image at a time."""
    from adaseg.data import collate

    counter = FlopCounter(scopes={"encoder": model.encoder_modules()})
    counts = []
    for i in flop_mine:
        batch = collate([dataset[i]])
        _, c = counter.count(_forward_eager, model, batch["images"].to(device), batch["padding_mask"].to(device), settings,
                             generator, _take(image_exits, [i]))
        counts.append(c)
    return counts


def _throughput_pass(model, dataset, n: int, settings: EvalSettings, device: torch.device,
                     generator: torch.Generator | None, reporter, image_exits: list[int] | None = None):
    """Pass 3 (rank 0): images/s over up to four batches of the first ``n`` images; the batch
    size timed and the measurement."""
    from adaseg.data import collate

    # A batch larger than the evaluated images would only repeat them (--batch-size 100000 on
    # 4 images once built a 100000-image batch): time at most n images per batch.
    timing_batch = min(settings.batch_size, n)
    if timing_batch < settings.batch_size and reporter is not None:
        reporter.info(f"eval: --batch-size {settings.batch_size} is more than the {n} evaluated images; "
                      f"images/s is measured at batch {timing_batch}")
    nb = max(1, min(4, math.ceil(n / timing_batch)))
    batches = []
    for b in range(nb):
        idx = [(b * timing_batch + j) % n for j in range(timing_batch)]
        cb = collate([dataset[i] for i in idx])
        batches.append((cb["images"].to(device), cb["padding_mask"].to(device), _take(image_exits, idx)))

    def step(i: int) -> int:
        images, mask, exits = batches[i % len(batches)]
        _forward(model, images, mask, settings, generator, exits)
        return int(images.shape[0])

    throughput = measure_throughput(step, batch_size=timing_batch, device=device,
                                    warmup=settings.warmup, iterations=settings.timed)
    return timing_batch, throughput


def _report(run: RunDir, model, info: dict, gate_info: dict | None, settings_json: dict, gathered: list[dict],
            gathered_flops: list, throughput, scorer: Scorer, *, task: str, data_spec: str,
            device: torch.device, t0: float) -> EvalReport:
    """The report from every rank's per-image results and FLOPs and rank 0's throughput."""
    metrics, parts_by_task = _metrics(gathered, scorer)
    flop_stats = FlopStats(per_image=gathered_flops)
    parts = build_parts(gathered, gathered_flops, parent_fingerprint=info["fingerprint"], metric=scorer.metric,
                        categories=scorer.categories, parts=parts_by_task)
    exits_used = [r["exit"] for r in gathered]
    hist: dict[str, int] = {}
    for e in exits_used:
        hist[str(e)] = hist.get(str(e), 0) + 1
    if gate_info is not None:
        settings_json["gate_settings"] = {k: gate_info["extra"].get(k) for k in ("beta", "K", "loss", "exits")}
        if "features" in gate_info["config"]:  # a gate beyond the paper's (the paper's reports stay as they were)
            settings_json["gate_settings"]["features"] = gate_info["config"]["features"]
    return EvalReport(
        settings=settings_json,
        metrics=metrics,
        gflops=flop_stats.summary(),
        throughput=throughput.summary(),
        exits={"histogram": dict(sorted(hist.items(), key=lambda kv: int(kv[0]))),
               "mean": sum(exits_used) / max(len(exits_used), 1), "depth": int(model.depth)},
        info={"run": str(run.root), "parent_fingerprint": info["fingerprint"],
              "parent_content_sha256": info["content_hash"],
              **({"gate_fingerprint": gate_info["fingerprint"], "gate_content_sha256": gate_info["content_hash"]}
                 if gate_info is not None else {}),
              "model": info["model"],
              "data": data_spec, "task": task, "metric": scorer.metric, "seconds": time.perf_counter() - t0,
              "device": str(device), "threads": torch.get_num_threads()},
        parts=parts,
    )


def _score_batch(model, out, batch, idx, scorer: Scorer) -> list[dict]:
    """Per image: its exit, id and every evaluator's record (under the evaluator's ``record``)."""
    plan = out.exit_plan.tolist()
    order = scorer.suite.figure_order
    predictions = {e.task: e.predict(model, out, batch) for e in order}
    return [{"exit": int(plan[j]), "image_id": scorer.image_id(i),
             **{e.record: e.score(scorer, batch, j, i, predictions[e.task][j]) for e in order}}
            for j, i in enumerate(idx)]


def _metrics(per_image: list[dict], scorer: Scorer) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report's figures (each evaluator's in the suite's order, then the per-image means)
    and every evaluator's per-image part by name."""
    suite: Suite = scorer.suite
    summaries = [(e, e.summarize(scorer, [r[e.record] for r in per_image])) for e in suite.evaluators]
    out: dict[str, Any] = {}
    for _, s in summaries:
        out.update(s.figures)
    for _, s in summaries:
        out.update(s.image_figures)
    return out, {e.part: s.part for e, s in summaries}
