"""Step A's weighted stochastic depth (``--recipe wsd``: loss = sum_k alpha_k L_k over exits
2..K) makes the early exits better than standard training (full depth only): a small but
real training (ECO-M2F Table 5; README "Early exits after Step A").

Both runs start from the shipped base (adaseg/assets) and train the same iterations with the
same seed and data order on a built-in synthetic set of 64-pixel images (the base was trained
at 128: both must adapt to the new scale, and the standard recipe adapts only what the full
depth reads). Exit 2 is then scored on the same val images. Measured margins (PQ points, exit 2,
wsd - standard; 32 val images; 30 iterations of batch 8 at lr 1e-3):
seed 0: 36.20 - 27.91 = +8.29; seed 1: 32.80 - 30.37 = +2.43; seed 2: 35.85 - 30.39 = +5.46.
About 3.5 min at one thread on a shared 2-core machine (the wsd run is two thirds of it)."""

from __future__ import annotations

import pytest
from recipe_testing import invoke_json

from adaseg.data.synthetic.generate import write_synthetic
from adaseg.runs.parent import shipped_base

ITERS, BATCH, LR, SEED = 30, 8, 1e-3, 0
N_TRAIN, N_VAL, SIZE = 64, 32, 64
MARGIN = 0.015  # PQ as a fraction: 1.5 points, under the smallest measured margin (+2.43)


def _exit2_pq(root, folder, recipe: str) -> float:
    base = shipped_base("m2f_tiny", "synthetic")
    assert base is not None, "the shipped base adaseg/assets/m2f_tiny_synthetic_base.safetensors is missing"
    out = invoke_json("train-parent", "--data", folder, "--init", str(base), "--recipe", recipe,
                      "--iters", str(ITERS), "--batch-size", str(BATCH), "--lr", str(LR),
                      "--backbone-lr-mult", "1.0", "--seed", str(SEED), "--threads", "1", "--run", root)
    assert out["iterations"] == ITERS and out["recipe"] == recipe
    report = invoke_json("eval", "--run", root, "--exit", "2", "--gate", "none", "--limit", str(N_VAL),
                         "--threads", "1", "--warmup", "0", "--timed", "1", "--flops-images", "1")
    assert report["settings"]["exit"] == 2 and report["settings"]["gate"] is None
    assert report["settings"]["images"] == N_VAL and report["exits"]["histogram"] == {"2": N_VAL}
    return report["metrics"]["PQ"]


@pytest.mark.slow
def test_weighted_stochastic_depth_lifts_the_early_exit_over_standard_training(tmp_path):
    folder = write_synthetic(str(tmp_path / "synth"), n_train=N_TRAIN, n_val=N_VAL, size=SIZE, seed=0, workers=1)
    standard = _exit2_pq(tmp_path / "standard", folder, "standard")
    wsd = _exit2_pq(tmp_path / "wsd", folder, "wsd")
    assert wsd - standard >= MARGIN, (f"exit 2 PQ: wsd {100 * wsd:.2f} vs standard {100 * standard:.2f} "
                                      f"({100 * (wsd - standard):+.2f}, expected >= +{100 * MARGIN:.1f})")
