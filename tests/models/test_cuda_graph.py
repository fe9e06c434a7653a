"""The adaptive encoder as CUDA graphs (adaseg.models.adaptive.cuda_graph).

Oracles: the eager model at the same settings (heads within float tolerance, pause records
equal), and ``model.prepare`` of the images themselves for a bucket's encoder input.
The capture needs a GPU (skipped with the reason on CPU); what a CPU can check is checked
here: the refusals, and the per-bucket encoder input that gate buckets use.
"""

from __future__ import annotations

import os

import pytest
import torch

import adaseg
from adaseg.models.adaptive.cuda_graph import GraphedModel, check_graphable, copy_prep, prep_rows
from adaseg.models.adaptive.gate import Gate
from adaseg.models.adaptive.settings import AdaptiveSettings

NAMES = ["segmenter_tiny", "m2f_tiny"]


def _model(name: str, device: str = "cpu"):
    torch.manual_seed(0)
    options = {"num_classes": 4, **({"thing_ids": (0, 1)} if name.startswith("m2f") else {})}
    return adaseg.create_model(name, **options).eval().to(device)


def test_refused_on_cpu_with_one_line():
    with pytest.raises(ValueError, match=r"^a CUDA graph needs a CUDA device, got cpu") as err:
        GraphedModel(_model("segmenter_tiny"), AdaptiveSettings(pause="1:0.4"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("settings,why", [
    (AdaptiveSettings(record_exits=(2, 3)), "recorded exits"),
    (AdaptiveSettings(pause="1:0.4", pause_mode="random"), "random pausing"),
    (AdaptiveSettings(exits=[2, 3]), "per-image exits"),
    (AdaptiveSettings(keep_aux=True), "keep_aux"),
])
def test_settings_a_graph_cannot_hold_are_refused(settings, why):
    with pytest.raises(ValueError, match=why):
        check_graphable(settings, "cuda")


@pytest.mark.parametrize("name", NAMES)
def test_bucket_input_equals_prepare_of_its_images(name):
    model = _model(name)
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    rows = torch.tensor([0, 2, 3])
    with torch.inference_mode():
        full, want = model.prepare(images, None), model.prepare(images[rows], None)
        got = prep_rows(full, rows, 4)
        copied = model.prepare(torch.zeros_like(images[rows]), None)
        copy_prep(copied, got)
    from adaseg.models.adaptive.cuda_graph import _tensors

    for g, c, w in zip(_tensors(got), _tensors(copied), _tensors(want), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
        assert torch.equal(c, g)


_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


@_GPU
@pytest.mark.parametrize("name", NAMES)
def test_graphed_encoder_equals_eager(name):
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("TRITON_INTERPRET=1 (tests/conftest.py) cannot run CUDA tensors: run with TRITON_INTERPRET=0")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    model = _model(name, "cuda")
    images = torch.randn(4, 3, 64, 64, device="cuda")
    gate = Gate(in_channels=model.gate_channels, exits=model.exits).cuda()
    torch.nn.init.normal_(gate.linear.weight, std=5.0)
    model.set_gate(gate)
    for settings in (AdaptiveSettings(pause="1:0.4,2:0.3"), AdaptiveSettings(exits=3, pause="2:0.5"),
                     AdaptiveSettings(exits="gate", pause="1:0.4")):
        graphed = GraphedModel(model, settings)
        with torch.inference_mode():
            want = model(images, None, settings)
            for _ in range(2):  # captured on the first call, replayed on the second
                got = graphed(images)
        assert torch.equal(got.exit_plan, want.exit_plan)
        for key in sorted(want.heads):
            if isinstance(want.heads[key], torch.Tensor):
                torch.testing.assert_close(got.heads[key], want.heads[key], rtol=1e-4, atol=1e-4)
        for layer in {r.layer for r in want.paused}:
            rows = lambda out: {int(i): p for r in out.paused if r.layer == layer  # noqa: E731
                                for i, p in zip(r.rows.tolist(), r.positions)}
            g, w = rows(got), rows(want)
            assert g.keys() == w.keys() and all(torch.equal(g[i], w[i]) for i in w)


def test_predictor_option_is_checked_before_loading(tmp_path):
    from adaseg.predict.predictor import PredictError, PredictTypeError, Predictor

    missing = tmp_path / "no-such-run"  # nothing is loaded before the arguments are checked
    with pytest.raises(PredictError, match=r"^cuda_graph needs a CUDA device, got cpu$") as err:
        Predictor(missing, device="cpu", cuda_graph=True, flops=False)
    assert err.value.param == "cuda-graph"
    with pytest.raises(PredictTypeError, match="cuda_graph must be True or False"):
        Predictor(missing, device="cpu", cuda_graph="yes")


def test_eval_cuda_graph_is_refused_on_cpu_in_one_line(tmp_path):
    from click.testing import CliRunner

    from adaseg.cli.main import main

    result = CliRunner().invoke(main, ["eval", "--run", str(tmp_path / "run"), "--device", "cpu", "--cuda-graph"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "a CUDA graph needs a CUDA device, got cpu" in errors[0]
    assert not (tmp_path / "run").exists()  # nothing written


def test_eval_report_of_a_graphed_run_has_its_own_name():
    from adaseg.engine.evaluate import EvalSettings

    assert EvalSettings(exit=3).name() + "_cudagraph" == EvalSettings(exit=3, cuda_graph=True).name()
    assert EvalSettings(cuda_graph=True).to_json()["cuda_graph"] is True
