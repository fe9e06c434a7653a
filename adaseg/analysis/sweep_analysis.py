"""From a sweep's reports to its table: one row per point, the Pareto fronts, the adaptive
advantages and the budget picks -- everything ``sweep.json`` / ``sweep.csv`` and the plots
hold. Intervals need the points' per-image parts (``bootstrap`` > 0); without them every
estimate is still computed, from the reports."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from adaseg.analysis.pareto import best_within, interpolate_curve, pareto_front
from adaseg.analysis.sweep import QUALITY_KEYS, SweepPoint, SweepResult, encoder_gflops, eval_command, quality_key
from adaseg.runs.run_dir import RunDir


def point_row(run: RunDir, point: SweepPoint) -> dict[str, Any]:
    """The measured facts of one point (no statistics yet)."""
    rep, spec = point.report, point.spec
    m = rep["metrics"]
    key = quality_key(rep)
    row: dict[str, Any] = {
        "point": spec.label(), "kind": spec.kind, "origin": spec.origin, "exit": spec.exit, "beta": spec.beta,
        "pause": spec.pause, "pause_mode": spec.mode if spec.pause else None,
        "report": str(point.path.relative_to(run.root)) if point.path.is_relative_to(run.root) else str(point.path),
        "reused": point.reused, "eval": eval_command(run, point.settings), "images": rep["settings"]["images"],
        "quality_metric": key, "quality": m.get(key),
        "gflops_total_mean": float(rep["gflops"]["gflops"]["total"]["mean"]),
        "gflops_encoder_mean": encoder_gflops(rep),
        "images_per_s": float(rep["throughput"]["images_per_s"]),
        "exit_mean": float(rep["exits"]["mean"]),
        "exits_histogram": {str(k): int(v) for k, v in rep["exits"]["histogram"].items()},
    }
    for k in QUALITY_KEYS:
        if k in m:
            row[k] = m[k]
    return row


def _q(rows: Sequence[dict]) -> np.ndarray:
    return np.array([np.nan if r["quality"] is None else float(r["quality"]) for r in rows])


def mark_fronts(rows: list[dict]) -> None:
    """``on_front_gflops`` (quality vs encoder GFLOPs) and ``on_front_ips`` (vs images/s). The
    oracle's points are bounds, not operating points: never on a front (their quality left
    out of it)."""
    q = _q(rows)
    q[[j for j, r in enumerate(rows) if r["kind"] == "oracle"]] = np.nan
    g = pareto_front([r["gflops_encoder_mean"] for r in rows], q)
    i = pareto_front([r["images_per_s"] for r in rows], q, cost_lower_is_better=False)
    for r, a, b in zip(rows, g, i):
        r["on_front_gflops"], r["on_front_ips"] = bool(a), bool(b)


def fixed_curve(rows: Sequence[dict]) -> list[int]:
    """Indices of the static baseline: fixed exits and full depth, no pausing, no gate."""
    return [j for j, r in enumerate(rows) if r["kind"] in ("exit", "full")]


def random_curve(rows: Sequence[dict]) -> list[int]:
    """Indices of random pausing's points (no gate)."""
    return [j for j, r in enumerate(rows) if r["kind"] == "pause" and r["pause_mode"] == "random"]


def full_depth(rows: Sequence[dict]) -> int | None:
    return next((j for j, r in enumerate(rows) if r["kind"] == "full"), None)


def _advantage_estimate(rows, j: int, curve: list[int], *, front: bool, anchor: int | None) -> float:
    from adaseg.analysis.sweep_stats import curve_points

    end = None if anchor is None else (rows[anchor]["gflops_encoder_mean"], _q([rows[anchor]])[0])
    xs, ys = curve_points([rows[c]["gflops_encoder_mean"] for c in curve], _q([rows[c] for c in curve]), front=front,
                          anchor=end)
    q = rows[j]["quality"]
    return float("nan") if q is None else float(q) - interpolate_curve(xs, ys, rows[j]["gflops_encoder_mean"])


def advantages(rows: list[dict], parts: list | None, *, n_boot: int, seed: int, level: float) -> dict[str, list]:
    """``{"gate": [...], "pause": [...]}``: each gate's advantage over the fixed-exit curve and
    each entropy pause point's over the random-pausing curve, at equal encoder GFLOPs."""
    from adaseg.analysis import sweep_stats

    out: dict[str, list] = {"gate": [], "pause": []}
    jobs = [("gate", j, fixed_curve(rows), False, None) for j, r in enumerate(rows) if r["kind"] == "gate"]
    rand, full = random_curve(rows), full_depth(rows)
    if rand:
        jobs += [("pause", j, rand, True, full) for j, r in enumerate(rows)
                 if r["kind"] == "pause" and r["pause_mode"] == "entropy"]
    for what, j, curve, front, anchor in jobs:
        entry: dict[str, Any] = {"point": rows[j]["point"], "beta": rows[j]["beta"], "pause": rows[j]["pause"],
                                 "gflops_encoder_mean": rows[j]["gflops_encoder_mean"], "quality": rows[j]["quality"],
                                 "quality_metric": rows[j]["quality_metric"],
                                 "curve": [rows[c]["point"] for c in curve] + ([] if anchor is None else
                                                                               [rows[anchor]["point"]])}
        estimate = _advantage_estimate(rows, j, curve, front=front, anchor=anchor)
        if not np.isfinite(estimate):
            entry.update(estimate=None, undefined="its encoder GFLOPs lie outside the curve's range (no extrapolation)")
        elif n_boot > 0 and parts is not None:
            entry.update(sweep_stats.advantage(parts[j], [parts[c] for c in curve], rows[j]["quality_metric"],
                                               front=front, anchor=None if anchor is None else parts[anchor],
                                               n_boot=n_boot, seed=seed, level=level))
        else:
            entry["estimate"] = estimate
        out[what].append(entry)
    return out


def budget_picks(rows: list[dict], *, target_gflops: float | None, target_ips: float | None) -> dict[str, Any] | None:
    """The best point meeting the budget (encoder GFLOPs <= G and/or images/s >= X), overall,
    among the gates alone (the beta for the budget) and among the pause configurations (in
    each mode): ``{"target_gflops", "target_ips", "best": row index or None, "gate": ...,
    "pause_entropy": ..., "pause_random": ...}``. None without a budget."""
    if target_gflops is None and target_ips is None:
        return None
    q = _q(rows)
    g = np.array([r["gflops_encoder_mean"] for r in rows])
    ips = np.array([r["images_per_s"] for r in rows])
    meets = np.ones(len(rows), dtype=bool)
    if target_gflops is not None:
        meets &= g <= target_gflops
    if target_ips is not None:
        meets &= ips >= target_ips

    def pick(members: list[int]) -> int | None:
        ok = [j for j in members if meets[j]]
        if not ok:
            return None
        # best_within on the members already meeting both limits: highest quality, then cheaper
        chosen = best_within(g[ok], q[ok], limit=np.inf)
        return None if chosen is None else ok[chosen]

    everything = list(range(len(rows)))
    out: dict[str, Any] = {"target_gflops": target_gflops, "target_ips": target_ips, "best": pick(everything),
                           "gate": pick([j for j, r in enumerate(rows) if r["kind"] == "gate"])}
    for mode in ("entropy", "random"):
        out[f"pause_{mode}"] = pick([j for j, r in enumerate(rows) if r["kind"] == "pause" and r["pause_mode"] == mode])
    cheapest = int(np.nanargmin(g)) if len(rows) else None
    fastest = int(np.nanargmax(ips)) if len(rows) else None
    out["cheapest"], out["fastest"] = cheapest, fastest
    return out


def check_same_images(parts: list, result: SweepResult) -> None:
    """Every point must be paired image by image with the first (a report reused from another
    dataset or image count would not be): :class:`~adaseg.analysis.sweep.SweepError` otherwise."""
    from adaseg.eval.bootstrap import IncomparableError, check_comparable
    from adaseg.analysis.sweep import SweepError

    for pp, point in zip(parts[1:], result.points[1:]):
        try:
            check_comparable(parts[0], pp, name=point.path.name, baseline_name=result.points[0].path.name)
        except IncomparableError as exc:
            raise SweepError(None, str(exc)) from None


def analyse(run: RunDir, result: SweepResult, *, n_boot: int, seed: int, level: float = 0.9,
            target_gflops: float | None = None, target_ips: float | None = None) -> dict[str, Any]:
    """Rows, fronts, intervals (``n_boot`` > 0: per-image parts are loaded), advantages and
    budget picks: the content of ``sweep.json``."""
    rows = [point_row(run, p) for p in result.points]
    mark_fronts(rows)
    parts = None
    if n_boot > 0:
        from adaseg.eval.image_parts import load_parts
        from adaseg.analysis.sweep_stats import GFLOPS_KEY, point_intervals

        parts = [p.parts if p.parts is not None else load_parts(p.path) for p in result.points]
        check_same_images(parts, result)
        for r, pp in zip(rows, parts):
            keys = [k for k in QUALITY_KEYS if k in r and k in pp.metric_names]
            iv = point_intervals(pp, keys, n_boot=n_boot, seed=seed, level=level)
            for k in keys:
                r[f"{k}_lo"], r[f"{k}_hi"] = iv[k]["lo"], iv[k]["hi"]
            q, g = iv[r["quality_metric"]], iv[GFLOPS_KEY]
            r["quality_lo"], r["quality_hi"], r["quality_sd"] = q["lo"], q["hi"], q["sd"]
            r["gflops_encoder_lo"], r["gflops_encoder_hi"] = g["lo"], g["hi"]
    else:
        for r in rows:
            for k in [*(k for k in QUALITY_KEYS if k in r), "quality", "gflops_encoder"]:
                r[f"{k}_lo"] = r[f"{k}_hi"] = None
            r["quality_sd"] = None
    return {
        "rows": rows,
        "advantage": advantages(rows, parts, n_boot=n_boot, seed=seed, level=level),
        "budget": budget_picks(rows, target_gflops=target_gflops, target_ips=target_ips),
        "greedy": result.greedy,
        "gates": result.gates,
        "fitted_gates": result.fitted,
        "bootstrap": {"n_boot": n_boot, "seed": seed, "level": level},
    }
