"""The demo's sequence: the whole default recipe, step by step, in one run directory.

1. train-parent  Step A (resumed when a training state is there)
2. derive        Step B
3. fit-gate --beta :data:`DEMO_BETA`  Step C
4. eval four times: full depth, the gate, pausing :data:`DEMO_PAUSE`, gate + pausing

A step whose output is already in the run directory is skipped (and says so), so an
interrupted demo continues where it stopped. :func:`demo_steps` only decides; whoever runs
the demo (the CLI) carries each :class:`DemoStep` out before asking for the next one, since
what comes next depends on what the previous step wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from adaseg.runs.run_dir import RunDir

DEMO_BETA = 0.0005
DEMO_PAUSE = "3:0.4,5:0.3"
# (gate, pause) of the four evaluations, in the order of the comparison table.
DEMO_EVALS = (("none", None), ("latest", None), ("none", DEMO_PAUSE), ("latest", DEMO_PAUSE))


@dataclass(frozen=True)
class DemoStep:
    """One step of the demo: ``number`` of 4, the ``line`` to show, the ``command`` to run
    (train-parent, derive, fit-gate, eval) with ``options`` (its parameter names), or
    ``skipped`` (then ``line`` says why). ``report`` names an eval step's report."""

    number: int
    line: str
    command: str
    options: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    report: str | None = None


def report_name(gate: str, pause: str | None, eval_limit: int | None) -> str:
    """``demo_{full,gate}[_pause][_limitN]``: a demo on a few images must not replace the full
    demo's report."""
    name = f"demo_{'gate' if gate == 'latest' else 'full'}{'_pause' if pause else ''}"
    if eval_limit is not None:
        name += f"_limit{eval_limit}"
    return name


class DemoError(ValueError):
    """The demo cannot continue from what the run directory holds; one line saying what to do."""


def derived_current(run_dir: RunDir) -> bool:
    """True when the run's derived dataset was derived from its current parent, False when
    from another one (the parent was trained again: deriving again is the demo's job).

    A derived file that is corrupt or unreadable is not silently derived again (it may be
    the only copy of hours of Step B): :class:`DemoError` names it and the command that
    re-creates it."""
    from adaseg.storage.checkpoint import CheckpointError
    from adaseg.runs.derived import DerivedDataset, DerivedDatasetError
    from adaseg.runs.parent import parent_fingerprint
    from adaseg.runs.run_dir import recreate_hint

    try:
        derived = DerivedDataset.load(run_dir.derived_path)
    except (DerivedDatasetError, CheckpointError) as exc:
        raise DemoError(f"{exc} (the demo does not replace it silently: "
                        f"{recreate_hint(run_dir.derived_path)}, or delete it, then run the demo again)") from None
    return derived.parent_fingerprint == parent_fingerprint(run_dir)


def demo_steps(run_dir: RunDir, *, run: str, data: str, iters: int | None, derive_limit: int | None,
               eval_limit: int | None, threads: int, quiet: bool) -> Iterator[DemoStep]:
    """The demo's steps, in order; each decided after the previous one was carried out.
    ``run`` is the run directory as the user spelled it (shown in the lines)."""
    from adaseg.models.adaptive.plan import PausePlan

    if run_dir.has("parent"):
        yield DemoStep(1, f"adaseg train-parent --run {run}: skipped, {run_dir.parent_path} exists", "train-parent",
                       skipped=True)
    else:
        resume = run_dir.last_path.is_file()
        options = {"data": data, "run": run, "threads": threads, "quiet": quiet, "resume": resume}
        if iters is not None:
            options["iters"] = iters
        yield DemoStep(1, f"adaseg train-parent --run {run}" + (" --resume" if resume else ""), "train-parent",
                       options)
    current = derived_current(run_dir) if run_dir.has("derived") else None  # DemoError: corrupt
    if current:
        yield DemoStep(2, f"adaseg derive --run {run}: skipped, {run_dir.derived_path} exists", "derive",
                       skipped=True)
    else:
        why = "" if current is None else f" ({run_dir.derived_path} was derived from an earlier parent: derived again)"
        yield DemoStep(2, f"adaseg derive --run {run}{why}", "derive",
                       {"run": run, "threads": threads, "quiet": quiet, "limit": derive_limit})
    yield DemoStep(3, f"adaseg fit-gate --beta {DEMO_BETA} --run {run}", "fit-gate",
                   {"beta": DEMO_BETA, "run": run, "quiet": quiet})
    for gate, pause in DEMO_EVALS:
        name = report_name(gate, pause, eval_limit)
        plan = None if pause is None else PausePlan.parse(pause)
        yield DemoStep(4, f"adaseg eval --gate {gate}" + (f" --pause {pause}" if pause else "") + f" --run {run}",
                       "eval", {"gate": gate, "pause": plan, "run": run, "threads": threads, "quiet": True,
                                "limit": eval_limit, "name": name}, report=name)
