"""``adaseg sweep`` end to end on a tiny trained run: rows equal separate ``adaseg eval`` runs,
existing reports are reused (no forward pass), plots hold the CSV's series, budgets, and bad
input is refused with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adaseg.runs.parent import parent_fingerprint

from recipe_testing import copy_run, invoke, refused, snapshot, trained_run, write_folder

LIMIT = "2"
# A small grid: one fixed exit (+ full depth), one gate, one pause plan in both modes, gate x pause.
GRID = ["--exits", "2", "--betas", "0.0005", "--pause", "2:0.5", "--limit", LIMIT, "--threads", "1"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    return trained_run(root / "run", write_folder(root / "data"))


@pytest.fixture(scope="module")
def swept(base_run, tmp_path_factory):
    """A copy of the run after one sweep of GRID with 100 bootstrap resamples."""
    run = copy_run(base_run, tmp_path_factory.mktemp("swept") / "run")
    result = invoke("sweep", *GRID, "--bootstrap", "100", "--run", run.root)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return run


def _sweep_json(run, name="default"):
    return json.loads((run.root / "sweeps" / name / "sweep.json").read_text())


def _count_forwards(monkeypatch):
    import adaseg.engine.evaluate as ev

    calls = []
    real = ev._forward

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "_forward", counting)
    return calls


def test_sweep_rows_equal_separate_eval_runs(swept, tmp_path):
    data = _sweep_json(swept)
    rows = {r["point"]: r for r in data["rows"]}
    assert set(rows) == {"exit 2", "full depth", "gate beta=0.0005", "full depth + pause 2:0.5 (entropy)",
                         "full depth + pause 2:0.5 (random)", "gate beta=0.0005 + pause 2:0.5 (entropy)",
                         "gate beta=0.0005 + pause 2:0.5 (random)"}
    gate = swept.gates_dir / "gate_beta0.0005_K6_hard-ce.safetensors"
    # each setting evaluated again by `adaseg eval` in a fresh copy of the run
    other = copy_run(swept, tmp_path / "again")
    cases = {"exit 2": ["--exit", "2"], "full depth": ["--gate", "none"], "gate beta=0.0005": ["--gate", gate],
             "full depth + pause 2:0.5 (random)": ["--gate", "none", "--pause", "2:0.5", "--pause-mode", "random"],
             "gate beta=0.0005 + pause 2:0.5 (entropy)": ["--gate", gate, "--pause", "2:0.5"]}
    for point, args in cases.items():
        result = invoke("eval", *args, "--limit", LIMIT, "--threads", "1", "--run", other.root, "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.output.strip().splitlines()[-1])
        row = rows[point]
        assert report["settings"]["name"] == json.loads((swept.root / row["report"]).read_text())["settings"]["name"]
        for key in ("PQ", "SQ", "RQ", "mIoU", "AP"):
            assert row[key] == report["metrics"][key], (point, key)
        assert row["gflops_encoder_mean"] == report["gflops"]["gflops"]["encoder"]["mean"]
        assert row["gflops_total_mean"] == report["gflops"]["gflops"]["total"]["mean"]
        assert row["exit_mean"] == report["exits"]["mean"]
        assert row["eval"].startswith("adaseg eval")


def test_sweep_json_has_intervals_fronts_and_advantages(swept):
    data = _sweep_json(swept)
    for r in data["rows"]:
        assert r["quality_metric"] == "PQ"
        assert r["quality_lo"] is not None and r["quality_lo"] <= r["quality"] + 1e-12 <= r["quality_hi"] + 2e-12
        assert isinstance(r["on_front_gflops"], bool) and isinstance(r["on_front_ips"], bool)
    assert any(r["on_front_gflops"] for r in data["rows"]) and any(r["on_front_ips"] for r in data["rows"])
    # each quality figure's interval is the bootstrap of that report's own parts (part A's code)
    from adaseg.eval.bootstrap import metric_intervals
    from adaseg.eval.image_parts import load_parts

    row = data["rows"][0]
    ivs = metric_intervals(load_parts(swept.root / row["report"]), ["PQ", "mIoU", "AP"], 100, 0)
    for key in ("PQ", "mIoU", "AP"):
        assert (row[f"{key}_lo"], row[f"{key}_hi"]) == (ivs[key].lo, ivs[key].hi)
    (gate_adv,) = data["advantage"]["gate"]
    assert gate_adv["curve"] == ["exit 2", "full depth"]
    (pause_adv,) = data["advantage"]["pause"]
    assert pause_adv["point"] == "full depth + pause 2:0.5 (entropy)"
    for adv in (gate_adv, pause_adv):
        assert adv.get("estimate") is None or adv["n_boot"] == 100


def test_reuse_does_not_recompute(swept, tmp_path, monkeypatch):
    run = copy_run(swept, tmp_path / "run")
    reports = sorted(p for p in run.reports_dir.iterdir())
    before = {p.name: p.read_bytes() for p in reports}
    calls = _count_forwards(monkeypatch)
    result = invoke("sweep", *GRID, "--bootstrap", "0", "--run", run.root)
    assert result.exit_code == 0, result.output
    assert calls == []  # not one model forward: every point's report was reused
    assert {p.name: p.read_bytes() for p in run.reports_dir.iterdir()} == before
    assert all(r["reused"] for r in _sweep_json(run)["rows"])

    # refit the gate with other settings: same file name, other content -> only its points recompute
    assert invoke("fit-gate", "--beta", "0.0005", "--epochs", "3", "--run", run.root).exit_code == 0
    result = invoke("sweep", *GRID, "--bootstrap", "0", "--run", run.root)
    assert result.exit_code == 0, result.output
    assert calls  # the gate's points ran
    rows = _sweep_json(run)["rows"]
    assert {r["point"] for r in rows if not r["reused"]} == {
        "gate beta=0.0005", "gate beta=0.0005 + pause 2:0.5 (entropy)", "gate beta=0.0005 + pause 2:0.5 (random)"}


def test_plots_hold_the_csv_series(swept):
    from PIL import Image

    from adaseg.analysis.sweep_output import read_csv
    from adaseg.analysis.sweep_plot import exits_figure, quality_figure

    out = swept.root / "sweeps" / "default"
    for stem in ("quality_vs_gflops", "quality_vs_ips", "gate_exits"):
        with Image.open(out / f"{stem}.png") as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 200
        assert (out / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    rows = _sweep_json(swept)["rows"]
    table = read_csv(out / "sweep.csv")
    assert [t["point"] for t in table] == [r["point"] for r in rows]

    fig = quality_figure(rows, "gflops")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert {"fixed exits", "gate", "pause (entropy)", "pause (random)", "gate + pause", "Pareto front",
            "full depth"} <= set(lines)

    def series(kind_test):
        pts = sorted((float(t["gflops_encoder_mean"]), 100 * float(t["quality"])) for t in table if kind_test(t))
        return np.array(pts)

    def drawn(label):
        line = lines[label]
        return np.array(sorted(zip(line.get_xdata(), line.get_ydata())))

    np.testing.assert_allclose(drawn("fixed exits"), series(lambda t: t["kind"] in ("exit", "full")))
    np.testing.assert_allclose(drawn("gate"), series(lambda t: t["kind"] == "gate"))
    np.testing.assert_allclose(drawn("Pareto front"), series(lambda t: t["on_front_gflops"] == "True"))
    np.testing.assert_allclose(drawn("full depth"), series(lambda t: t["kind"] == "full"))

    hist = exits_figure(rows, depth=6)
    heights = [p.get_height() for p in hist.axes[0].patches]
    (gate_row,) = [t for t in table if t["kind"] == "gate"]
    counts = dict(pair.split(":") for pair in gate_row["exits_histogram"].split())
    n = sum(int(v) for v in counts.values())
    assert heights == pytest.approx([100 * int(counts.get(str(e), 0)) / n for e in range(1, 7)])


def test_budget_pick_and_unmet_budget(swept, tmp_path):
    run = copy_run(swept, tmp_path / "run")
    rows = _sweep_json(run)["rows"]
    limit = float(np.median([r["gflops_encoder_mean"] for r in rows]))
    result = invoke("sweep", *GRID, "--bootstrap", "0", "--target-gflops", limit, "--run", run.root, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.strip().splitlines()[-1])
    ok = [r for r in data["rows"] if r["gflops_encoder_mean"] <= limit]
    best = data["rows"][data["budget"]["best"]]
    assert best["quality"] == max(r["quality"] for r in ok)
    assert best["gflops_encoder_mean"] == min(r["gflops_encoder_mean"] for r in ok if r["quality"] == best["quality"])

    result = invoke("sweep", *GRID, "--bootstrap", "0", "--target-gflops", "1e-9", "--run", run.root)
    assert result.exit_code == 3
    assert result.output.strip().splitlines()[-1].startswith("Error: no measured point meets the budget")
    assert (run.root / "sweeps" / "default" / "sweep.json").is_file()  # the measurements are still written


def test_missing_gate_is_fitted_from_derived_data(swept, tmp_path):
    run = copy_run(swept, tmp_path / "run")
    result = invoke("sweep", "--exits", "2", "--betas", "0.01", "--limit", LIMIT, "--bootstrap", "0",
                    "--threads", "1", "--run", run.root)
    assert result.exit_code == 0, result.output
    assert (run.gates_dir / "gate_beta0.01_K6_hard-ce.safetensors").is_file()
    assert "fitted the missing gate for beta 0.01" in result.output


@pytest.mark.parametrize("args, expect", [
    (["--exits", "9"], "exit 9 is outside the parent's layers 1..6"),
    (["--exits", "two"], "'two' is not an exit layer"),
    (["--betas", "-1"], "'-1' must be a finite number >= 0"),
    (["--betas", "x"], "'x' is not a number"),
    (["--pause", "6:0.5"], "pause layer 6 must be below the encoder depth 6"),
    (["--pause", "2:0.5", "--modes", "fast"], "'fast' is not one of entropy, random"),
    (["--modes", "random"], "--modes chooses how tokens pause: it needs --pause SPEC or --pause-grid"),
    (["--grid-ratios", "0.5"], "--grid-ratios shapes the pause grid: it needs --pause-grid"),
    (["--pause-grid", "--grid-layers", "6"], "pause layer 6 is outside 1..5"),
    (["--pause-grid", "--grid-ratios", "1.5"], "1.5 is not in (0, 1)"),
    (["--bootstrap", "50"], "50 resamples cannot give a 90% interval"),
    (["--name", "a/b"], "sweep name 'a/b' may only hold"),
    (["--target-gflops", "0"], "--target-gflops"),
])
def test_bad_input_is_refused(base_run, args, expect):
    refused(base_run.root, "sweep", "--betas", "0.0005", *args, "--limit", "1", "--run", base_run.root, expect=expect)


def test_missing_derived_data_names_derive(base_run, tmp_path):
    run = copy_run(base_run, tmp_path / "run")
    run.derived_path.unlink()
    run.derived_path.with_suffix(".json").unlink(missing_ok=True)
    refused(run.root, "sweep", "--betas", "0.7", "--run", run.root,
            expect=f"has no derived dataset to fit one from: run `adaseg derive --run {run.root}` first")


def test_no_parent_names_train_parent(tmp_path):
    refused(tmp_path, "sweep", "--run", tmp_path / "nothing", expect="train-parent")
    assert snapshot(tmp_path) == {}


def test_report_of_another_parent_or_without_parts_is_recomputed(swept, tmp_path):
    from adaseg.eval.image_parts import parts_path_for

    run = copy_run(swept, tmp_path / "run")
    exit2 = run.report_path("exit2_limit2")
    report = json.loads(exit2.read_text())
    report["info"]["parent_fingerprint"] = "0" * 64  # as if made by another parent (and sealed as adaseg does;
    from adaseg.storage.integrity import seal_json  # an edit left unsealed is refused: tests/cli/test_report_trust)

    exit2.write_text(json.dumps(seal_json(report)))
    parts_path_for(run.report_path("full_limit2")).unlink()  # its per-image parts are gone
    result = invoke("sweep", *GRID, "--bootstrap", "100", "--run", run.root)
    assert result.exit_code == 0, result.output
    rows = _sweep_json(run)["rows"]
    assert {r["point"] for r in rows if not r["reused"]} == {"exit 2", "full depth"}
    assert json.loads(exit2.read_text())["info"]["parent_fingerprint"] == parent_fingerprint(run)


def test_gate_pause_combination_no_image_reaches_is_refused(base_run, tmp_path):
    run = copy_run(base_run, tmp_path / "run")
    assert invoke("fit-gate", "--beta", "0.3", "--K", "3", "--epochs", "2", "--run", run.root).exit_code == 0
    # the sweep's file for beta 0.3 holds a gate whose last exit is 3
    for ext in (".safetensors", ".json"):
        (run.gates_dir / f"gate_beta0.3_K3_hard-ce{ext}").rename(run.gates_dir / f"gate_beta0.3_K6_hard-ce{ext}")
    refused(run.root, "sweep", "--betas", "0.3", "--pause", "4:0.5", "--limit", "1", "--run", run.root,
            expect="4:0.5: pause layer 4 is not below the last exit 3 of the gate for beta 0.3")


def test_pause_grid_runs_the_greedy_search(swept, tmp_path):
    run = copy_run(swept, tmp_path / "run")
    result = invoke("sweep", "--exits", "2", "--betas", "none", "--pause-grid", "--grid-layers", "2,3",
                    "--grid-ratios", "0.5", "--modes", "entropy", "--limit", LIMIT, "--bootstrap", "0",
                    "--threads", "1", "--run", run.root)
    assert result.exit_code == 0, result.output
    data = _sweep_json(run)
    (first, *rest) = data["greedy"]["entropy"]
    assert first["base"] is None and first["candidates"] == ["2:0.5", "3:0.5"]
    rows = {r["pause"]: r for r in data["rows"] if r["kind"] in ("pause", "full")}
    assert set(first["candidates"]) <= set(rows)  # every candidate is a row of the sweep
    # the choice, recomputed by hand from the rows: least quality lost per GFLOP saved among
    # the candidates that save compute and that no point measured by then (full depth and the
    # stage's candidates) dominates
    measured = [(rows[k]["gflops_encoder_mean"], rows[k]["quality"]) for k in [None, *first["candidates"]]]
    full = rows[None]

    def dominated(g, q):
        return any(g2 <= g and q2 >= q and (g2 < g or q2 > q) for g2, q2 in measured)

    g0, q0 = full["gflops_encoder_mean"], full["quality"]
    ranks = {c: (max(q0 - rows[c]["quality"], 0.0) / (g0 - rows[c]["gflops_encoder_mean"]),
                 rows[c]["gflops_encoder_mean"])  # no loss counts 0; then the larger saving
             for c in first["candidates"]
             if rows[c]["gflops_encoder_mean"] < g0 and not dominated(rows[c]["gflops_encoder_mean"], rows[c]["quality"])}
    assert first["chosen"] == (min(ranks, key=ranks.get) if ranks else None)
    if first["chosen"] == "2:0.5":
        assert rest and rest[0]["candidates"] == ["2:0.5,3:0.5"] and "2:0.5,3:0.5" in rows


def test_data_and_flops_images_reach_every_point_and_reuse_evals(base_run, tmp_path, monkeypatch):
    """--data / --flops-images make the same reports `adaseg eval` makes with them, so evals run
    before the sweep (e.g. one process per point on a large val split) are reused."""
    run = copy_run(base_run, tmp_path / "run")
    data = json.loads((run.root / "config.json").read_text())["data"]  # the folder it was trained on
    common = ["--limit", "3", "--flops-images", "2", "--data", data, "--threads", "1", "--run", run.root]
    for args in (["--exit", "2"], ["--gate", "none"]):
        result = invoke("eval", *args, *common)
        assert result.exit_code == 0, result.output
    evals = {p.name: p.read_bytes() for p in run.reports_dir.iterdir()}
    assert any("_flops2_data-" in name for name in evals)
    calls = _count_forwards(monkeypatch)
    result = invoke("sweep", "--exits", "2", "--betas", "none", "--bootstrap", "0", *common)
    assert result.exit_code == 0, result.output
    assert calls == []  # both points were the evals above
    assert {p.name: p.read_bytes() for p in run.reports_dir.iterdir()} == evals
    rows = _sweep_json(run)["rows"]
    assert all(r["images"] == 3 and r["reused"] for r in rows)
    assert all("--flops-images 2" in r["eval"] and f"--data {data}" in r["eval"] for r in rows)
