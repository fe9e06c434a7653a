"""Validate a dataset file by file: ``adaseg data check SPEC``.

Checks every image of each split: image readable, label readable, panoptic PNG ids and
JSON segments agree both ways, category ids known, image / label / JSON sizes agree, JSON
areas equal the PNG's pixel counts, and (folders with ``panoptic_semseg_*``) the semantic
PNG equals the one derived from the panoptic GT. Problems are collected, not raised, so one
run reports all of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from adaseg.data.build import build_dataset, parse_spec
from adaseg.data.meta import IGNORE_LABEL
from adaseg.data.panoptic_io import DataError, read_label_png


@dataclass(frozen=True)
class Problem:
    file: str
    message: str


@dataclass
class SplitReport:
    split: str
    num_images: int
    checked: int
    problems: list[Problem]


def check_dataset(spec: str, splits: tuple[str, ...] = ("train", "val"), *, limit: int | None = None
                  ) -> list[SplitReport]:
    """One :class:`SplitReport` per split; a split that cannot be opened at all reports one
    problem naming the file. ``limit`` checks only the first ``limit`` images per split."""
    reports = []
    for split in splits:
        try:
            ds = build_dataset(spec, split, train=False)
        except DataError as exc:
            reports.append(SplitReport(split, 0, 0, [Problem(_file_of(str(exc)), str(exc))]))
            continue
        semantic_dir = _semantic_dir(spec, split)
        n = len(ds) if limit is None else min(limit, len(ds))
        problems = []
        for i in range(n):
            problems.extend(check_record(ds, i, semantic_dir=semantic_dir))
        reports.append(SplitReport(split, len(ds), n, problems))
    return reports


def check_record(ds, i: int, *, semantic_dir: str | None = None) -> list[Problem]:
    rec = ds.records[i]
    if hasattr(ds, "instances_gt"):  # detection: the JSON was checked on loading; the image here
        try:
            ds.load_raw(i)
        except DataError as exc:
            return [Problem(_file_of(str(exc)), str(exc))]
        return []
    try:
        _, ids, segs = ds.load_raw(i)
    except DataError as exc:
        return [Problem(_file_of(str(exc)), str(exc))]
    problems = []
    if rec.segments is not None:
        u, c = np.unique(ids, return_counts=True)
        count = dict(zip(u.tolist(), c.tolist()))
        for s in rec.segments:
            if "area" in s and int(s["area"]) != count.get(int(s["id"]), 0):
                problems.append(Problem(rec.label_path, f"segment {s['id']}: JSON area {s['area']} but "
                                                        f"{count.get(int(s['id']), 0)} pixels in the PNG"))
        if semantic_dir is not None:
            name = os.path.splitext(os.path.basename(rec.label_path))[0] + ".png"
            sem_path = os.path.join(semantic_dir, name)
            try:
                sem = read_label_png(sem_path)
            except DataError as exc:
                return problems + [Problem(sem_path, str(exc))]
            expected = np.full(ids.shape, IGNORE_LABEL, dtype=np.int64)
            for seg_id, label, _ in segs:  # crowd included: semantic maps keep the crowd's class
                expected[ids == seg_id] = label
            if sem.shape != expected.shape or not np.array_equal(sem, expected):
                problems.append(Problem(sem_path, "semantic PNG differs from the map derived from the panoptic PNG "
                                                  "and JSON"))
    return problems


def _semantic_dir(spec: str, split: str) -> str | None:
    kind, root = parse_spec(spec)
    if kind == "synthetic":
        from adaseg.data.synthetic.cache import synthetic_root

        root = synthetic_root()
    elif kind != "folder":
        return None
    d = os.path.join(root, f"panoptic_semseg_{split}")
    return d if os.path.isdir(d) else None


def _file_of(message: str) -> str:
    head = message.split(": ", 1)[0]
    return head if os.path.sep in head or "." in head else ""


def summarize_difficulty(ds) -> dict | None:
    """Histogram of generator difficulty (synthetic sets), else None."""
    d = [x for x in ds.difficulties if x is not None]
    if not d:
        return None
    hist, edges = np.histogram(d, bins=5, range=(0.0, 1.0))
    return {"mean": float(np.mean(d)), "bins": [f"{a:.1f}-{b:.1f}" for a, b in zip(edges[:-1], edges[1:])],
            "counts": hist.tolist()}
