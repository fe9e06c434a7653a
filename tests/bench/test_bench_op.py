"""``adaseg bench op``: the ratios, the report, the memory probe and the CLI's bad input."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from adaseg.bench import op as bench
from adaseg.cli.main import main
from adaseg.ops import _extension

needs_ext = pytest.mark.skipif(not _extension.is_built(), reason="adaseg._C is not built")


def test_ratios_and_report_from_rows():
    rows = [
        bench.Row("c", "reference", fwd_ms=30.0, fwd_bwd_ms=50.0, fwd_mem_mib=100.0, fwd_bwd_mem_mib=120.0),
        bench.Row("c", "ext", fwd_ms=10.0, fwd_bwd_ms=40.0, fwd_mem_mib=10.0, fwd_bwd_mem_mib=90.0),
    ]
    r = bench.ratios(rows)["c"]
    assert r["fwd_speedup"] == pytest.approx(3.0) and r["fwd_bwd_speedup"] == pytest.approx(1.25)
    assert r["fwd_mem_ratio"] == pytest.approx(0.1) and r["fwd_bwd_mem_ratio"] == pytest.approx(0.75)
    info = {"device": "x", "threads": 2, "torch": "t", "dtype": "float32", "repeats": 1, "locations": "encoder",
            "load_average_1min": 0.5, "memory_method": "m"}
    text = bench.format_report(info, rows, cases=())
    assert "fwd 3.00x (meets >= 3x)" in text and "fwd+bwd 1.25x (MISSES >= 2x)" in text
    assert "fwd+bwd 0.750 (MISSES <= 0.5)" in text


@needs_ext
def test_memory_probe_sees_the_reference_intermediates():
    """The reference materialises (N*M, D, Lq, L*P) samples; the extension only its output."""
    case = bench.Case("probe", batch=2, heads=4, head_dim=64, shapes=((32, 32), (16, 16)), points=4)
    ref = bench.cpu_peak_memory(case, "reference", dtype=bench.torch.float32)
    ext = bench.cpu_peak_memory(case, "ext", dtype=bench.torch.float32)
    if ref is None:
        pytest.skip("peak-memory probe needs Linux /proc/self/clear_refs")
    out_mib = case.batch * case.queries * case.heads * case.head_dim * 4 / 2**20  # 2.5 MiB
    samples_mib = out_mib * len(case.shapes) * case.points  # one copy of the samples: 20 MiB
    assert ref[0] >= samples_mib
    assert 0.8 * out_mib <= ext[0] < 2 * out_mib
    assert ext[1] < ref[1]


def test_cli_rejects_unknown_case():
    result = CliRunner().invoke(main, ["bench", "op", "--case", "nope"])
    assert result.exit_code != 0 and "unknown case 'nope'" in result.output


@needs_ext
def test_cli_prints_figures_for_the_small_case():
    result = CliRunner().invoke(main, ["bench", "op", "--case", "m2f_tiny-128", "--repeats", "1", "--no-memory"])
    assert result.exit_code == 0, result.output
    assert "m2f_tiny-128: N=8 Lq=S=336 M=4 D=16 L=3" in result.output and "speed-up fwd" in result.output
