"""``adaseg bench model`` on a CPU: the arms it runs, and its ratios against an independent
FLOP count (adaseg.eval.flops.count_flops of the model at each setting) and its own times."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import adaseg
from adaseg.cli.main import main
from adaseg.eval.flops import count_flops
from adaseg.models.adaptive.settings import AdaptiveSettings


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU report (no graph arms)")
def test_cpu_run_reports_every_arm_but_the_graph_ones(tmp_path):
    out = tmp_path / "model.json"
    result = CliRunner().invoke(main, ["bench", "model", "--model", "segmenter_tiny", "--size", "32", "--batch", "2",
                                       "--pause", "1:0.5", "--exit-mix", "2,3", "--repeats", "2", "--warmup", "0",
                                       "--threads", "1", "--scope", "encoder", "--clock", "cpu",
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "(no CUDA device: the graph arms are not run)" in result.output
    data = json.loads(out.read_text())
    rows = {r["arm"]: r for r in data["rows"]}
    assert list(rows) == ["none", "reference", "lean", "exits"]
    torch.manual_seed(0)
    model = adaseg.create_model("segmenter_tiny").eval()
    image = torch.zeros(1, 3, 32, 32)
    scope = {"encoder": model.encoder_modules()}

    def enc(settings):
        with torch.inference_mode():
            return count_flops(lambda: model(image, None, settings), scopes=scope, model=model).scopes["encoder"]

    base = enc(AdaptiveSettings())
    assert rows["lean"]["ideal"] == pytest.approx(base / enc(AdaptiveSettings(pause="1:0.5")))
    assert rows["exits"]["ideal"] == pytest.approx(base / ((enc(AdaptiveSettings(exits=2)) + enc(AdaptiveSettings(exits=3))) / 2))
    for r in rows.values():
        assert r["runs"] == 2 and r["images_per_s"] == pytest.approx(2 / r["seconds"])
        assert r["realisation"] == pytest.approx(r["speedup"] / r["ideal"])
        assert r["spread"][0] <= r["spread"][1]
    assert rows["none"]["speedup"] == 1.0 and rows["none"]["ideal"] == 1.0
    assert rows["lean"]["speedup"] == pytest.approx(rows["none"]["seconds"] / rows["lean"]["seconds"])


@pytest.mark.parametrize("args,message", [
    (["--arm", "graph"], "the graph arms need a CUDA device"),
    (["--model", "nope"], "unknown model 'nope'"),
    (["--pause", "3:1.5"], "pause ratio must be in (0, 1)"),
    (["--batch", "0"], "expected positive integers"),
    (["--model", "segmenter_tiny", "--exit-mix", "9"], "exit mix [9] must be layers in 1.."),
])
def test_bad_options_are_one_error_line(args, message):
    result = CliRunner().invoke(main, ["bench", "model", "--size", "32", "--batch", "1", "--repeats", "1", *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output
