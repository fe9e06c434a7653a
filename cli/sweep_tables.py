"""The tables ``adaseg sweep`` prints: the Pareto fronts, the adaptive advantages and the
budget picks (with the ``adaseg eval`` command that reproduces each pick)."""

from __future__ import annotations


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _interval(lo, hi) -> str:
    return "-" if lo is None or hi is None else f"[{100 * lo:.2f}, {100 * hi:.2f}]"


def front_table(data: dict, axis: str):
    """The points on one front, cheapest (or fastest) first."""
    from rich.table import Table

    rows = data["rows"]
    key = "on_front_gflops" if axis == "gflops" else "on_front_ips"
    front = [r for r in rows if r[key]]
    front.sort(key=(lambda r: r["gflops_encoder_mean"]) if axis == "gflops" else (lambda r: -r["images_per_s"]))
    level = int(round(100 * data["bootstrap"]["level"]))
    metric = rows[0]["quality_metric"] if rows else "quality"
    what = "encoder GFLOPs" if axis == "gflops" else "images/s"
    table = Table(title=f"Pareto front: {metric} vs {what} ({len(front)} of {len(rows)} points)")
    table.add_column("point")
    table.add_column(metric, justify="right")
    table.add_column(f"{level}% interval", justify="right")
    table.add_column("GFLOPs enc.", justify="right")
    table.add_column("GFLOPs total", justify="right")
    table.add_column("images/s", justify="right")
    table.add_column("mean exit", justify="right")
    for r in front:
        table.add_row(r["point"], _pct(r["quality"]), _interval(r["quality_lo"], r["quality_hi"]),
                      f"{r['gflops_encoder_mean']:.4f}", f"{r['gflops_total_mean']:.4f}", f"{r['images_per_s']:.1f}",
                      f"{r['exit_mean']:.2f}")
    return table


def advantage_table(data: dict, what: str):
    """Gate vs the fixed-exit curve, or entropy vs random pausing, at equal encoder GFLOPs."""
    from rich.table import Table

    entries = data["advantage"][what]
    level = int(round(100 * data["bootstrap"]["level"]))
    title = ("Adaptive advantage of the gate: quality - fixed-exit curve at the gate's encoder GFLOPs" if what == "gate"
             else "Entropy vs random pausing: quality - random-pausing curve at equal encoder GFLOPs")
    table = Table(title=title)
    table.add_column("point")
    table.add_column("GFLOPs enc.", justify="right")
    table.add_column("advantage (points)", justify="right")
    table.add_column(f"{level}% interval", justify="right")
    table.add_column("P(adv <= 0)", justify="right")
    for e in entries:
        if e.get("estimate") is None:
            table.add_row(e["point"], f"{e['gflops_encoder_mean']:.4f}", "undefined", e.get("undefined", ""), "-")
            continue
        p = e.get("p_le_0")
        table.add_row(e["point"], f"{e['gflops_encoder_mean']:.4f}", f"{100 * e['estimate']:+.2f}",
                      _interval(e.get("lo"), e.get("hi")), "-" if p is None else f"{p:.3f}")
    return table


def _budget_text(data: dict) -> str:
    b = data["budget"]
    parts = []
    if b["target_gflops"] is not None:
        parts.append(f"encoder GFLOPs <= {b['target_gflops']:g}")
    if b["target_ips"] is not None:
        parts.append(f"images/s >= {b['target_ips']:g}")
    return " and ".join(parts)


def budget_table(data: dict):
    """The best point meeting the budget, overall and per family, with its eval command."""
    from rich.table import Table

    b, rows = data["budget"], data["rows"]
    table = Table(title=f"Budget: {_budget_text(data)}")
    table.add_column("best")
    table.add_column("point")
    table.add_column(rows[0]["quality_metric"] if rows else "quality", justify="right")
    table.add_column("GFLOPs enc.", justify="right")
    table.add_column("images/s", justify="right")
    table.add_column("get it with")
    for label, key in (("overall", "best"), ("gate (beta)", "gate"), ("entropy pausing", "pause_entropy"),
                       ("random pausing", "pause_random")):
        j = b.get(key)
        if j is None:
            if key == "best" or any(_family(r) == key for r in rows):
                table.add_row(label, "none meets the budget", "-", "-", "-", "-")
            continue
        r = rows[j]
        table.add_row(label, r["point"], _pct(r["quality"]), f"{r['gflops_encoder_mean']:.4f}",
                      f"{r['images_per_s']:.1f}", r["eval"])
    return table


def _family(row: dict) -> str | None:
    if row["kind"] == "gate":
        return "gate"
    if row["kind"] == "pause":
        return f"pause_{row['pause_mode']}"
    return None


def budget_unmet_line(data: dict) -> str:
    """One line: no point meets the budget, and what the sweep can reach."""
    b, rows = data["budget"], data["rows"]
    c, f = rows[b["cheapest"]], rows[b["fastest"]]
    return (f"no measured point meets the budget ({_budget_text(data)}): the cheapest is {c['point']} at "
            f"{c['gflops_encoder_mean']:.4f} encoder GFLOPs, the fastest {f['point']} at {f['images_per_s']:.1f} "
            "images/s; sweep cheaper settings (earlier --exits, larger --betas, more pausing)")


def print_sweep(reporter, data: dict) -> None:
    reporter.print(front_table(data, "gflops"))
    reporter.print(front_table(data, "ips"))
    for what in ("gate", "pause"):
        if data["advantage"][what]:
            reporter.print(advantage_table(data, what))
    if data["budget"] is not None and data["budget"]["best"] is not None:
        reporter.print(budget_table(data))
