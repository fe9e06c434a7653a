"""The demo's sequence (adaseg.engine.demo), decided step by step on a fresh run directory."""

from adaseg.engine.demo import demo_steps, report_name
from adaseg.runs.run_dir import RunDir


def test_a_fresh_run_gets_every_step_with_the_limit_in_the_report_names(tmp_path):
    run = str(tmp_path / "run")
    steps = list(demo_steps(RunDir(run), run=run, data="synthetic", iters=3, derive_limit=None, eval_limit=2,
                            threads=1, quiet=True))
    assert [(s.number, s.command, s.skipped) for s in steps] == [
        (1, "train-parent", False), (2, "derive", False), (3, "fit-gate", False),
        (4, "eval", False), (4, "eval", False), (4, "eval", False), (4, "eval", False)]
    assert steps[0].line == f"adaseg train-parent --run {run}"
    assert steps[0].options == {"data": "synthetic", "run": run, "threads": 1, "quiet": True, "resume": False,
                                "iters": 3}
    assert steps[2].line == f"adaseg fit-gate --beta 0.0005 --run {run}"
    assert [s.report for s in steps[3:]] == ["demo_full_limit2", "demo_gate_limit2", "demo_full_pause_limit2",
                                             "demo_gate_pause_limit2"]
    assert steps[6].line == f"adaseg eval --gate latest --pause 3:0.4,5:0.3 --run {run}"
    assert str(steps[6].options["pause"]) == "3:0.4,5:0.3" and steps[3].options["pause"] is None


def test_report_names_without_a_limit():
    assert report_name("none", None, None) == "demo_full"
    assert report_name("latest", "3:0.4", None) == "demo_gate_pause"
