"""``adaseg bench pause``: runs on a CPU-only machine, says the GPU figures are unmeasured, and
both arms give the reference ops' outputs (oracle: ``adaseg.ops.reference`` and a scatter)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from click.testing import CliRunner

from adaseg.bench import pause as bench
from adaseg.cli.main import main
from adaseg.ops import reference


@pytest.mark.parametrize(
    "name,tbps",
    [
        ("NVIDIA H100 80GB HBM3", 3.35),
        ("NVIDIA H100 PCIe", 2.0),
        ("NVIDIA H200", 4.8),
        ("NVIDIA GH200 480GB", 4.0),
        ("NVIDIA A100-SXM4-80GB", 2.039),
        ("NVIDIA A100-PCIE-40GB", 1.555),
        ("Some Future Accelerator", None),
    ],
)
def test_peak_bandwidth_table(name, tbps):
    assert bench.peak_bandwidth_tbps(name) == tbps


def test_paper_shapes():
    shapes = {c.name: (c.batch, c.n, c.dim, c.classes) for c in bench.CASES}
    assert shapes["vit-s/ade20k-512"] == (32, (512 // 16) ** 2, 384, 150)
    assert shapes["vit-ti/cityscapes-768"] == (32, (768 // 16) ** 2, 192, 19)
    assert shapes["m2f/coco-1024"] == (2, sum((1024 // s) ** 2 for s in (8, 16, 32)), 256, 133)


@pytest.mark.parametrize("arm", ["ops", "lean"])
def test_each_arm_gives_the_reference_outputs(arm):
    g = torch.Generator().manual_seed(0)
    b, n, d, n_keep = 2, 40, 16, 24
    x, w, bias = torch.randn(b, n, d, generator=g), torch.randn(5, d, generator=g), torch.randn(5, generator=g)
    positions = torch.sort(torch.randperm(2 * n, generator=g)[:n]).values.expand(b, n).contiguous()
    buf = torch.zeros(b, 2 * n, d)
    with torch.inference_mode():
        kept, kept_at, paused_at = bench._STAGES[arm](x, w, bias, positions, buf, n_keep)
    keep_idx, pause_idx, want_kept = reference.topk_keep(x, reference.aux_entropy(x, w, bias), n_keep)
    assert torch.equal(kept, want_kept)
    assert torch.equal(kept_at, positions.gather(1, keep_idx)) and torch.equal(paused_at, positions.gather(1, pause_idx))
    want_buf = torch.zeros(b, 2 * n, d).scatter(1, paused_at.unsqueeze(-1).expand(b, n - n_keep, d),
                                                 x.gather(1, pause_idx.unsqueeze(-1).expand(b, n - n_keep, d)))
    assert torch.equal(buf, want_buf)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only report")
def test_cli_reports_unmeasured_gpu_figures(tmp_path):
    out = tmp_path / "pause.json"
    result = CliRunner().invoke(
        main, ["bench", "pause", "--case", "vit-ti/ade20k-512", "--repeats", "2", "--cpu-batch", "1",
               "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "No CUDA device: device and eager times are UNMEASURED" in result.output
    assert "lean over ops" in result.output
    data = json.loads(out.read_text())
    assert [r["arm"] for r in data["rows"]] == ["ops", "lean"]
    for r in data["rows"]:
        assert r["device_us"] is None and r["eager_us"] is None and r["host_us"] > 0 and r["check"] == "ok"
        assert r["shape"] == "B=1 N=1024 D=192 C=150"


def test_cli_rejects_bad_flags(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "pause", "--case", "vit-xl"])
    assert result.exit_code == 2 and "vit-xl" in result.output
    result = runner.invoke(main, ["bench", "pause", "--ratio", "1.5"])
    assert result.exit_code == 2 and "--ratio" in result.output
    result = runner.invoke(main, ["bench", "pause", "--case", "vit-ti/ade20k-512", "--repeats", "1",
                                  "--json", str(tmp_path / "missing" / "x.json")])
    assert result.exit_code == 2 and "does not exist" in result.output


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="runs the Triton backend under the interpreter")
def test_both_arms_through_the_triton_backend_under_interpreter():
    case = bench.Case("tiny", 2, 40, 16, 5)
    info, rows = bench.run(cases=(case,), repeats=1, backend="triton")
    assert [(r.arm, r.backend) for r in rows] == [("ops", "triton"), ("lean", "triton")]
    for r in rows:  # the interpreter's float32 entropy may only flip exact near-ties
        assert r.check == "ok" or r.check.startswith("selection differs"), r.check
    assert "backend triton" in bench.format_report(info, rows)
