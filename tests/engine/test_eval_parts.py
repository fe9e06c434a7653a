"""eval writes per-image parts beside its report (the report's figures exactly), --bootstrap adds
intervals, and `adaseg compare` compares reports on the same images or refuses with one line."""

from __future__ import annotations

import json

import pytest
from recipe_testing import copy_run, invoke, invoke_json, refused, write_folder

from adaseg.eval.image_parts import load_parts, parts_path_for
from adaseg.runs.run_dir import RunDir

QUICK = ("--threads", "1", "--warmup", "0", "--timed", "1", "--batch-size", "2")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("data") / "synth")


@pytest.fixture(scope="module")
def base(tmp_path_factory, folder):
    """The shipped trained base as parent (one step at a negligible lr: figures above 0), and
    three reports: full depth, exit 2 (with --bootstrap) and full depth on 2 images."""
    from adaseg.runs.parent import shipped_base

    root = tmp_path_factory.mktemp("runs") / "run"
    invoke_json("train-parent", "--data", folder, "--init", shipped_base("m2f_tiny", "synthetic"), "--iters", "1",
                "--batch-size", "2", "--lr", "1e-12", "--threads", "1", "--run", root)
    run = RunDir(root)
    reports = {"full": invoke_json("eval", "--gate", "none", "--run", root, *QUICK),
               "exit2": invoke_json("eval", "--exit", "2", "--bootstrap", "200", "--run", root, *QUICK),
               "limit2": invoke_json("eval", "--gate", "none", "--limit", "2", "--run", root, *QUICK)}
    return run, reports


@pytest.fixture
def run(base, tmp_path):
    return copy_run(base[0], tmp_path / "run")


def test_parts_give_the_report_figures_exactly(base):
    run, reports = base
    for name, report in reports.items():
        path = run.report_path(report["settings"]["name"])
        assert report["parts"]["file"] == parts_path_for(path).name == f"eval_{report['settings']['name']}.parts.safetensors"
        parts = load_parts(path)
        assert parts.num_images == report["settings"]["images"]
        assert parts.parent_fingerprint == report["info"]["parent_fingerprint"]
        got = parts.metrics()
        scalar = {k: v for k, v in report["metrics"].items() if not isinstance(v, dict)}
        assert set(scalar) <= set(got)
        for key, value in scalar.items():
            if key == "mean_image_PQ":  # per-image class order may differ: equal to float rounding
                assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15)
            else:
                assert got[key] == value, (name, key)
        assert got["gflops_encoder_mean"] == report["gflops"]["gflops"]["encoder"]["mean"]
        assert got["gflops_total_mean"] == report["gflops"]["gflops"]["total"]["mean"]
        assert got["exit_mean"] == report["exits"]["mean"]
    full = reports["full"]["metrics"]
    assert full["PQ"] > 0 and full["AP"] > 0 and full["mIoU"] > 0, "the trained base should score above 0"
    assert len(load_parts(run.report_path("full")).ap.det_score) > 0


def test_bootstrap_adds_intervals_of_the_report_figures(base):
    run, reports = base
    iv = reports["exit2"]["intervals"]
    assert iv["n_boot"] == 200 and iv["level"] == 0.9 and iv["seed"] == 0
    for key in ("PQ", "mIoU", "AP", "gflops_encoder_mean"):
        entry = iv["metrics"][key]
        expected = reports["exit2"]["metrics"].get(key, reports["exit2"]["gflops"]["gflops"]["encoder"]["mean"])
        assert entry["estimate"] == pytest.approx(expected, rel=1e-12)
        assert entry["lo"] <= entry["estimate"] <= entry["hi"]
    assert "intervals" not in reports["full"]
    shown = invoke("eval", "--exit", "2", "--bootstrap", "100", "--run", run.root, *QUICK)
    assert shown.exit_code == 0 and "90% interval (100 resamples)" in shown.output


def test_compare_prints_the_difference_with_its_interval(base):
    run, _ = base
    full, exit2 = run.report_path("full"), run.report_path("exit2")
    data = invoke_json("compare", full, exit2, "--bootstrap", "200", "--seed", "3")
    assert data["baseline"] == str(full) and data["reports"] == [str(exit2)] and data["images"] == 4
    assert [r["metric"] for r in data["rows"]] == ["PQ", "mIoU", "AP", "gflops_encoder_mean"]
    a, b = load_parts(full), load_parts(exit2)
    for row in data["rows"]:
        k = row["metric"]
        assert row["baseline"] == a.metrics()[k] and row["value"] == b.metrics()[k]
        d = row["difference"]
        assert d["estimate"] == pytest.approx(row["value"] - row["baseline"], abs=1e-12)
        assert d["lo"] <= d["estimate"] <= d["hi"] and d["n_boot"] == 200
    gf = data["rows"][-1]["difference"]
    assert gf["hi"] < 0 and gf["p_ge_0"] == pytest.approx(1 / 201)  # exit 2 always costs less
    # --vs: the baseline; a report against itself differs by exactly 0
    same = invoke_json("compare", full, "--vs", full, "--bootstrap", "100", "--metrics", "PQ,SQ_th")
    assert all(r["difference"]["hi"] == r["difference"]["lo"] == 0.0 for r in same["rows"])
    shown = invoke("compare", full, exit2, "--bootstrap", "100")
    assert shown.exit_code == 0
    text = " ".join(shown.output.split())
    for needle in ("90% interval", "p(diff<=0)", "encoder GFLOPs", "PQ", "AP", "4 images", "100 paired resamples"):
        assert needle in text, needle


def test_compare_refuses_bad_input(run, tmp_path):
    full, exit2 = run.report_path("full"), run.report_path("exit2")
    refused(run.root, "compare", full, run.reports_dir / "eval_nope.json", expect="no such eval report")
    refused(run.root, "compare", full, run.config_path, expect="is not an eval report")
    refused(run.root, "compare", full, expect="nothing to compare")
    refused(run.root, "compare", full, exit2, "--bootstrap", "99", expect="99 is not in the range x>=100")
    refused(run.root, "compare", full, exit2, "--metrics", "PQ,Pq", expect="'Pq' is not a figure")
    refused(run.root, "compare", full, exit2, "--level", "90", expect="--level")
    refused(run.root, "compare", full, run.report_path("full_limit2"), expect="other images")

    parts = parts_path_for(exit2)
    data = bytearray(parts.read_bytes())
    data[-3] ^= 0x10
    parts.write_bytes(bytes(data))
    refused(run.root, "compare", full, exit2, expect="corrupt")
    parts.unlink()
    refused(run.root, "compare", full, exit2, expect="are missing")

    # a report of another parent: its parts re-saved with another fingerprint, the JSON pointing to them
    other = load_parts(full)
    other.parent_fingerprint = "0" * 64
    foreign = run.reports_dir / "eval_foreign.json"
    report = json.loads(full.read_text())
    report["parts"] = {"file": parts_path_for(foreign).name, "content_sha256": other.save(parts_path_for(foreign))}
    from adaseg.storage.integrity import seal_json

    foreign.write_text(json.dumps(seal_json(report)))  # as adaseg writes a report: with its content hash
    refused(run.root, "compare", full, foreign, expect="only settings of one parent are compared")
    # --across-parents pairs them: the same per-image parts differ by exactly 0 on every figure
    across = invoke_json("compare", full, foreign, "--across-parents", "--bootstrap", "100", "--metrics", "PQ,mIoU")
    assert [r["metric"] for r in across["rows"]] == ["PQ", "mIoU", "gflops_encoder_mean"]
    assert all(r["difference"]["lo"] == r["difference"]["hi"] == 0.0 for r in across["rows"])


def test_eval_bootstrap_below_100_is_refused(run):
    refused(run.root, "eval", "--exit", "2", "--bootstrap", "50", "--run", run.root, *QUICK,
            expect="use 0 (off) or at least 100")


def test_a_crash_between_parts_and_report_leaves_the_old_report_detectably_stale(run, monkeypatch):
    """save_report writes the parts first: if the JSON write then fails, the old report still
    names the old hash, and load_parts says the parts do not belong to it."""
    from adaseg.engine import evaluate as ev

    full = run.report_path("full")
    report = ev.EvalReport(settings={}, metrics={}, gflops={}, throughput={}, exits={}, parts=load_parts(full))
    report.parts.exits = report.parts.exits + 1  # another evaluation's parts

    def crash(self, name, data):
        raise OSError("disk full")

    monkeypatch.setattr(RunDir, "write_report", crash)
    with pytest.raises(OSError):
        ev.save_report(run, "full", report)
    with pytest.raises(ValueError, match="does not belong"):
        load_parts(full)
