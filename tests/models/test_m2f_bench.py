"""``adaseg bench m2f``: figures are produced on identical weights; a missing transformers is one clear line."""

from __future__ import annotations

import importlib.util

import pytest
from click.testing import CliRunner

from adaseg.cli.main import main


def test_missing_transformers_is_one_clear_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))
    result = CliRunner().invoke(main, ["bench", "m2f", "--setting", "small", "--size", "64"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: transformers is not installed; `pip install transformers` (adaseg's test extra) to compare against HF"
    ]


def test_bench_runs_on_identical_weights(tmp_path):
    pytest.importorskip("transformers", reason="transformers is not installed (pip install -e .[test])")
    out = tmp_path / "m2f.json"
    result = CliRunner().invoke(main, ["bench", "m2f", "--setting", "small", "--size", "64", "--repeats", "1",
                                       "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    import json

    r = json.loads(out.read_text())
    assert r["attention_mask_flips"] == 0
    assert r["max_abs_diff_class_logits"] < 1e-4 and r["max_abs_diff_mask_logits"] < 1e-4
    assert sorted(r["per_exit"], key=int) == [str(k) for k in range(1, 7)]
    for key in ("ours_forward", "hf_forward", "ours_encoder", "hf_encoder"):
        assert r[key]["wall_s"] > 0 and r[key]["cpu_s"] >= 0
    assert r["speedup"]["wall_s"] == pytest.approx(r["hf_forward"]["wall_s"] / r["ours_forward"]["wall_s"])
    assert "speedup" in result.output and "exit 6" in result.output
