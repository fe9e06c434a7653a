"""Which operating points ``adaseg sweep`` evaluates: fixed exits, gates, pause plans (a list,
or PAUMER's greedy search), and gate x pause combinations.

PAUMER (Sec. 4.1, "Choosing pause configurations"; App. H): "we sweep through configurations
that pause at only one layer and we pick the first layer and proportion. We fix this layer
and ratio, then sweep through pausing configurations at a second layer. We repeat this
procedure until adding more layers is no longer beneficial." The paper leaves "pick" to the
reader; :func:`greedy_pause_search` makes it a rule: among a stage's candidates that are on
the Pareto front (quality vs encoder GFLOPs) of every point measured so far in that mode,
take the one that loses the least quality per GFLOP saved relative to the stage's base.
A candidate that loses nothing counts as slope 0, and among those the one saving the most
compute is taken: a small measured gain is most likely noise, and ranking gains per GFLOP
would favour the cheapest savings (a late layer, a small ratio) and end the search early.
"No longer beneficial" = no candidate of the next stage is on that front (or none saves
compute).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from adaseg.analysis.pareto import pareto_front

# PAUMER trains with tau ~ U[0.2, 0.8] (Sec. 4.1); its Table 1 tests ratios 0.2..0.8.
DEFAULT_GRID_RATIOS = (0.2, 0.4, 0.6, 0.8)
DEFAULT_GRID_STAGES = 2  # "one pause layer x ratios, then a second layer"


@dataclass(frozen=True)
class PointSpec:
    """One operating point: a fixed ``exit`` (None: full depth) or a gate for ``beta``, with an
    optional pause plan (its exact spec text) in ``mode``; or, with ``oracle``, the oracle gate
    at ``beta`` (each val image at its best exit under beta by the run's val Step B: a bound,
    not a gate). ``origin`` says why the sweep has it (``exits``, ``betas``, ``pause``,
    ``grid``, ``combination``, ``oracle``)."""

    exit: int | None = None
    beta: float | None = None
    pause: str | None = None
    mode: str = "entropy"
    origin: str = "exits"
    oracle: bool = False

    @property
    def kind(self) -> str:
        """``full``, ``exit``, ``gate``, ``pause``, ``gate+pause``, ``oracle``."""
        if self.oracle:
            return "oracle"
        if self.beta is not None:
            return "gate+pause" if self.pause else "gate"
        if self.pause:
            return "pause"
        return "exit" if self.exit is not None else "full"

    def label(self) -> str:
        """Short human name, e.g. ``exit 4``, ``gate beta=0.0005 + pause 3:0.4 (random)``."""
        from adaseg.exact import exact_float

        if self.oracle:
            return f"oracle beta={exact_float(self.beta)}"
        what = f"gate beta={exact_float(self.beta)}" if self.beta is not None else (
            f"exit {self.exit}" if self.exit is not None else "full depth")
        if self.pause:
            what += f" + pause {self.pause} ({self.mode})"
        return what

    def key(self) -> tuple:
        """Identity of the setting (origin aside): two specs with one key are one point."""
        return (self.exit, self.beta, self.pause, self.mode if self.pause else None, self.oracle)


def parse_exits(text: str, depth: int) -> list[int]:
    """``--exits 2,4,6`` / ``all`` -> sorted exits with the full depth always included.
    Raises ValueError naming the bad value."""
    text = text.strip().lower()
    if text == "all":
        return list(range(1, depth + 1))
    exits = set()
    for part in text.split(","):
        try:
            e = int(part)
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not an exit layer (use e.g. 2,4,6 or all)") from None
        if not 1 <= e <= depth:
            raise ValueError(f"exit {e} is outside the parent's layers 1..{depth}")
        exits.add(e)
    exits.add(depth)  # the reference: full depth
    return sorted(exits)


def base_points(exits: Sequence[int], betas: Sequence[float], pauses: Sequence[str], modes: Sequence[str],
                *, depth: int, oracle: bool = False) -> list[PointSpec]:
    """The fixed grid: exits (full depth as ``exit=None``, the report ``adaseg eval`` writes
    with no option), gates, listed pause plans in every mode, and gate x pause in every mode;
    with ``oracle``, the oracle gate at every beta."""
    points = [PointSpec(exit=None if e == depth else e, origin="exits") for e in exits]
    points += [PointSpec(beta=b, origin="betas") for b in betas]
    points += [PointSpec(pause=p, mode=m, origin="pause") for p in pauses for m in modes]
    points += [PointSpec(beta=b, pause=p, mode=m, origin="combination") for b in betas for p in pauses for m in modes]
    if oracle:
        points += [PointSpec(beta=b, oracle=True, origin="oracle") for b in betas]
    return dedupe(points)


def dedupe(points: Sequence[PointSpec]) -> list[PointSpec]:
    """First of each :meth:`PointSpec.key`, order kept."""
    seen, out = set(), []
    for p in points:
        if p.key() not in seen:
            seen.add(p.key())
            out.append(p)
    return out


def plan_text(stages: Sequence[tuple[int, float]]) -> str:
    """Exact pause spec of ``stages`` (``3:0.4,5:0.2``)."""
    from adaseg.models.adaptive.plan import PausePlan

    return str(PausePlan(tuple((int(l), float(r)) for l, r in stages)))


@dataclass
class GreedyStage:
    """One stage of the search: the base it extended, every candidate tried, the one chosen
    (None: the search stopped here) and why."""

    base: str | None
    candidates: list[str]
    chosen: str | None
    reason: str

    def to_json(self) -> dict:
        return {"base": self.base, "candidates": self.candidates, "chosen": self.chosen, "reason": self.reason}


def greedy_pause_search(measure: Callable[[str | None], tuple[float, float]], *, depth: int,
                        layers: Sequence[int] | None = None, ratios: Sequence[float] = DEFAULT_GRID_RATIOS,
                        max_stages: int = DEFAULT_GRID_STAGES) -> list[GreedyStage]:
    """PAUMER's greedy choice of pause configurations (see the module docstring).

    Args:
        measure: pause spec (None: no pausing, the full-depth base) -> (encoder GFLOPs, quality);
            the caller evaluates (or reuses) the point and keeps its report.
        depth: encoder layers; pause layers are 1..depth-1.
        layers: layers a stage may pause after (default all 1..depth-1); a later stage only
            uses layers after the previous stage's.
        ratios: ratios tried at each layer.
        max_stages: most pause layers in one configuration.
    Returns the stages, in order.
    """
    layers = sorted(set(layers if layers is not None else range(1, depth)))
    measured: dict[str | None, tuple[float, float]] = {None: measure(None)}
    base: list[tuple[int, float]] = []
    stages: list[GreedyStage] = []
    for _ in range(max_stages):
        after = base[-1][0] if base else 0
        specs = [plan_text([*base, (l, r)]) for l in layers if l > after for r in ratios]
        base_spec = plan_text(base) if base else None
        if not specs:
            stages.append(GreedyStage(base_spec, [], None, f"no pause layer left after layer {after}"))
            break
        for s in specs:
            if s not in measured:
                measured[s] = measure(s)
        chosen, reason = _choose(measured, base_spec, specs)
        stages.append(GreedyStage(base_spec, specs, chosen, reason))
        if chosen is None:
            break
        from adaseg.models.adaptive.plan import PausePlan

        base = list(PausePlan.parse(chosen).stages)
    return stages


def _choose(measured: dict, base_spec: str | None, specs: list[str]) -> tuple[str | None, str]:
    """The stage's pick among ``specs`` (see the module docstring) and the reason."""
    keys = list(measured)
    cost = np.array([measured[k][0] for k in keys])
    quality = np.array([measured[k][1] for k in keys])
    on_front = dict(zip(keys, pareto_front(cost, quality)))
    g0, q0 = measured[base_spec]
    best, best_rank = None, None
    for s in specs:
        g, q = measured[s]
        if not on_front[s] or not g < g0:
            continue
        slope = max(q0 - q, 0.0) / (g0 - g)  # quality lost per GFLOP saved; no loss = 0
        rank = (slope, g)  # then the larger saving
        if best_rank is None or rank < best_rank:
            best, best_rank = s, rank
    best_slope = None if best_rank is None else best_rank[0]
    if best is None:
        return None, "no candidate saves compute on the Pareto front: adding a layer is not beneficial"
    return best, f"least quality lost per encoder GFLOP saved ({best_slope:.6g} per GFLOP) on the front"
