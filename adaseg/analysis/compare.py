"""``adaseg compare``: eval reports on the same images against a baseline, each difference with
a paired-bootstrap interval (:mod:`adaseg.eval.bootstrap`), from the reports' per-image parts
(no model, no data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from adaseg.eval.bootstrap import (BootstrapMemoryError, ComparisonRow, IncomparableError, check_resample_memory,
                                   compare_reports)
from adaseg.eval.image_parts import ImageParts, PartsError, load_parts

COST_METRIC = "gflops_encoder_mean"  # always compared: what the quality difference buys


class CompareError(ValueError):
    """Reports that cannot be compared; the message names the file or option."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


@dataclass
class Comparison:
    """The baseline, the compared reports and one row per (report, figure)."""

    baseline: Path
    reports: list[Path]
    images: int
    n_boot: int
    seed: int
    level: float
    metrics: list[str]
    rows: list[ComparisonRow]

    def rows_of(self, i: int) -> list[ComparisonRow]:
        return [r for r in self.rows if r.other == i]

    def to_json(self) -> dict[str, Any]:
        return {"baseline": str(self.baseline), "reports": [str(p) for p in self.reports], "images": self.images,
                "n_boot": self.n_boot, "seed": self.seed, "level": self.level, "metrics": self.metrics,
                "rows": [dict(r.to_json(), report=str(self.reports[r.other])) for r in self.rows]}


def _load(path: Path) -> tuple[ImageParts, str | None]:
    """A report's verified parts and the identity of the images it scored. The report must
    match its own content hash (one without, from an older adaseg, is refused: nothing
    would show that its parts record was not pointed at another report's parts)."""
    from adaseg.eval.image_parts import read_report
    from adaseg.runs.run_data import IMAGES_KEY

    try:
        parts = load_parts(path, require_hash=True)
        images = read_report(path, require_hash=True)["info"].get(IMAGES_KEY)
    except PartsError as exc:
        raise CompareError(str(exc)) from None
    return parts, images


def _same_images(baseline_path: Path, baseline: str | None, path: Path, images: str | None) -> None:
    """Refuse two reports whose images differ in content, though their ids may agree (the same
    ``--data`` path regenerated with other images, or two folders sharing ids)."""
    if baseline is None or images is None:
        which = baseline_path if baseline is None else path
        raise CompareError(f"{which} does not record which images it scored (written by an older adaseg): re-run "
                           "`adaseg eval` with the settings it names")
    if baseline != images:
        raise CompareError(f"{path} scored other images than {baseline_path} (their image files, labels or ids "
                           f"differ: images {images[:12]} vs {baseline[:12]}): only evaluations of the same images "
                           "are compared")


def parse_metrics(spec: str | None) -> list[str] | None:
    """``PQ,mIoU,AP`` -> a list (None: no choice given)."""
    if spec is None:
        return None
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise CompareError(f"{spec!r} names no figure", param="metrics")
    return names


def compare(paths: Sequence[str | Path], *, vs: str | Path | None, n_boot: int, seed: int, level: float,
            metrics: str | None, across_parents: bool = False) -> Comparison:
    """Load every report's parts and compare them with the baseline (``vs``, else the first of
    ``paths``) on ``metrics`` (comma-separated keys of
    :meth:`adaseg.eval.image_parts.ImageParts.metrics`; default: each evaluator's headline
    figure, e.g. PQ,mIoU,AP or mIoU) plus the
    encoder GFLOPs. Reports of another parent are refused unless ``across_parents`` (two
    parents scored on the same images, e.g. two training recipes). Raises
    :class:`CompareError` with one line for anything unusable."""
    paths = [Path(p) for p in paths]
    if vs is not None:
        baseline_path, others = Path(vs), paths
    else:
        if not paths:
            raise CompareError("give at least two reports, or one and --vs BASELINE")
        baseline_path, others = paths[0], paths[1:]
    if not others:
        raise CompareError(f"nothing to compare {baseline_path} with: give another report (or --vs BASELINE)")
    baseline, baseline_images = _load(baseline_path)
    parts = []
    for p in others:
        loaded, images = _load(p)
        _same_images(baseline_path, baseline_images, p, images)
        parts.append(loaded)
    wanted = parse_metrics(metrics) or list(baseline.suite.primaries)
    unknown = [k for k in wanted if k not in baseline.metric_names]
    if unknown:
        raise CompareError(f"{unknown[0]!r} is not a figure of these {baseline.metric} reports; choose from "
                           f"{', '.join(baseline.metric_names)}", param="metrics")
    keys = wanted + ([COST_METRIC] if COST_METRIC not in wanted else [])
    try:
        check_resample_memory(baseline.num_images, n_boot, len(keys) * len(parts))
    except BootstrapMemoryError as exc:
        raise CompareError(str(exc), param="bootstrap") from None
    try:
        rows = compare_reports(baseline, parts, metrics=keys, n_boot=n_boot, seed=seed, level=level,
                               names=[str(p) for p in others], across_parents=across_parents)
    except IncomparableError as exc:
        raise CompareError(f"{exc} (baseline {baseline_path})") from None
    return Comparison(baseline=baseline_path, reports=others, images=baseline.num_images, n_boot=n_boot, seed=seed,
                      level=level, metrics=keys, rows=rows)
