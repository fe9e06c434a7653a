"""``adaseg bench m2f --encoder ...``: the models differ only in their encoder, the FLOPs are
each model's own count, the ratios are ratios of the medians reported."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import adaseg
from adaseg.bench.m2f_encoders import build_models
from adaseg.cli.main import main
from adaseg.eval.flops import count_flops


def test_models_share_every_weight_outside_the_encoder():
    models = build_models("small", ("deform", "lite", "rt"))
    states = {k: m.state_dict() for k, m in models.items()}
    outside = [k for k in states["deform"] if not k.startswith("pixel_decoder.transformer.")]
    assert any(k.startswith("backbone.") for k in outside) and any(k.startswith("predictor.") for k in outside)
    for kind in ("lite", "rt"):
        assert all(torch.equal(states[kind][k], states["deform"][k]) for k in outside), kind


def test_bench_encoders_in_one_run(tmp_path):
    out = tmp_path / "enc.json"
    result = CliRunner().invoke(main, ["bench", "m2f", "--setting", "small", "--size", "64", "--repeats", "1",
                                       "--threads", "1", "--encoder", "deform", "--encoder", "lite", "--encoder", "rt",
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert list(r["per_encoder"]) == ["deform", "lite", "rt"] and r["baseline"] == "deform"
    x = torch.randn(1, 3, 64, 64)
    for kind, name in r["models"].items():
        model = adaseg.create_model(name).eval()
        c = count_flops(model, x, scopes={"encoder": model.encoder_modules()})  # FLOPs do not depend on values
        v = r["per_encoder"][kind]
        assert v["total_gflops"] == pytest.approx(c.total / 2e9) and v["encoder_gflops"] == pytest.approx(
            c.scopes["encoder"] / 2e9)
        base = r["per_encoder"]["deform"]
        assert v["forward_ratio"]["wall_s"] == pytest.approx(v["forward"]["wall_s"] / base["forward"]["wall_s"])
        assert v["encoder_ratio"]["cpu_s"] == pytest.approx(v["encoder"]["cpu_s"] / base["encoder"]["cpu_s"])
    assert r["per_encoder"]["lite"]["encoder_gflops"] < r["per_encoder"]["deform"]["encoder_gflops"]
    assert "lite" in result.output and "ratios to deform" in result.output


@pytest.mark.parametrize("args, message", [
    (["--encoder", "lite", "--encoder", "lite"], "each kind once"),
    (["--encoder", "rt", "--no-exits"], "--no-exits applies to the transformers comparison"),
    (["--encoder", "conv"], "'conv' is not one of"),
])
def test_bad_encoder_options_are_refused_with_one_error_line(tmp_path, args, message):
    result = CliRunner().invoke(main, ["bench", "m2f", "--setting", "small", *args, "--json", str(tmp_path / "x.json")])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 2 and len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "x.json").exists()
