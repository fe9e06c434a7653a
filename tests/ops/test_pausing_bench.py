"""``adaseg bench pause``: runs on a CPU-only machine, says the GPU figures are unmeasured."""

from __future__ import annotations

import json
import os

import pytest
import torch
from click.testing import CliRunner

from adaseg.bench import pause as bench
from adaseg.cli.main import main


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only report")
def test_cli_reports_unmeasured_gpu_figures(tmp_path):
    out = tmp_path / "pause.json"
    result = CliRunner().invoke(
        main, ["bench", "pause", "--case", "vit-ti/cityscapes", "--repeats", "2", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "GPU figures (Triton time, speedup, bandwidth) are UNMEASURED" in result.output
    data = json.loads(out.read_text())
    assert data["info"]["triton"] == "unmeasured (no CUDA device)"
    ops = [r["op"] for r in data["rows"]]
    assert ops == ["entropy", "keep", "assemble", "total"]
    for r in data["rows"]:
        assert r["triton_ms"] is None and r["speedup"] is None and r["reference_ms"] > 0
    total = data["rows"][-1]
    assert total["reference_ms"] == pytest.approx(sum(r["reference_ms"] for r in data["rows"][:3]))


def test_cli_rejects_bad_flags(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "pause", "--case", "vit-xl"])
    assert result.exit_code == 2 and "unknown case 'vit-xl'" in result.output
    result = runner.invoke(main, ["bench", "pause", "--ratio", "1.5"])
    assert result.exit_code == 2 and "--ratio" in result.output
    result = runner.invoke(main, ["bench", "pause", "--case", "vit-ti/cityscapes", "--repeats", "1",
                                  "--json", str(tmp_path / "missing" / "x.json")])
    assert result.exit_code == 2 and "does not exist" in result.output


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="runs the GPU path's Triton calls under the interpreter")
def test_triton_path_checks_agree_with_reference_under_interpreter():
    # The GPU branch's timing and agreement checks, run on CPU tensors by the interpreter.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 40, 16, generator=g)
    w, b = torch.randn(5, 16, generator=g), torch.randn(5, generator=g)
    h = bench.reference.aux_entropy(x, w, b)
    keep_idx, pause_idx, kept = bench.reference.topk_keep(x, h, 24)
    times, checks = bench._triton_times(x, w, b, h, 24, keep_idx, pause_idx, kept * 2, torch.device("cpu"), 1)
    assert checks == {"entropy": "ok", "keep": "ok", "assemble": "ok"}
    assert set(times) == {"entropy", "keep", "assemble"} and all(t > 0 for t in times.values())


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="runs the Triton branch under the interpreter")
def test_report_with_triton_rows_under_interpreter():
    # The rows and report the GPU run produces (speedups, bandwidth, unknown peak), built from
    # interpreter times on a tiny shape: the arithmetic and formatting are what is checked.
    case = bench.Case("tiny", 2, 40, 16, 5)
    info, rows = bench.run(cases=(case,), repeats=1, interpreted_triton=True)
    assert [r.op for r in rows] == ["entropy", "keep", "assemble", "total"]
    assert all(r.check == "ok" for r in rows), [r.check for r in rows]
    for r in rows:
        assert r.triton_ms > 0
        best = min(r.reference_ms, r.plain_ms) if r.op != "total" else None
        if best is not None:
            assert r.speedup == pytest.approx(best / r.triton_ms)
    ent = rows[0]
    moved = 2 * 40 * 16 * 4 + 5 * 16 * 4 + 5 * 4 + 2 * 40 * 4  # tokens, weight, bias, entropies (fp32 on CPU)
    assert ent.bandwidth_gbps == pytest.approx(moved / (ent.triton_ms * 1e-3) / 1e9)
    assert ent.peak_fraction is None  # no peak for a CPU
    report = bench.format_report(info, rows)
    assert "Triton column: interpreter on CPU (times meaningless; tests only)" in report
    assert rows[-1].triton_ms == pytest.approx(sum(r.triton_ms for r in rows[:3]))
