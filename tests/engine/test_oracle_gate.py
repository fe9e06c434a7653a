"""The oracle gate (issue 24): each val image at argmax_k (q_k - beta * layers_k) of its own
val-split Step B row; evaluation only.

Oracles: a hand-made Step B table whose argmax is worked out by hand (NaN policy included),
and, for the eval, fixed-exit evals of the same images (``--exit k``, a different exit path
in the model) whose per-image parts the oracle's report must reproduce image by image.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recipe_testing import hand_val_table, invoke, invoke_json

from adaseg.engine.gate_targets import oracle_exits
from adaseg.eval.image_parts import load_parts
from adaseg.runs.derived import DerivedDataset, val_derived_path

NAN = math.nan
EXITS = torch.tensor([2, 3, 4, 5, 6])
# rows: a clear best at 4; a tie 3 vs 6 (earliest wins); best at 6 by 0.01 (beta decides);
# partial NaN (exit 2 undefined = perfect); undefined at every exit (earliest)
TABLE = torch.tensor([
    [0.10, 0.20, 0.90, 0.50, 0.40],
    [0.30, 0.70, 0.60, 0.60, 0.70],
    [0.50, 0.50, 0.50, 0.50, 0.51],
    [NAN, 0.80, 0.90, 0.90, 0.95],
    [NAN, NAN, NAN, NAN, NAN],
], dtype=torch.float64)


@pytest.mark.parametrize("beta, expected", [
    (0.0, [4, 3, 6, 2, 2]),     # u = q: row 3 (q=0.51 at 6); row 4: NaN -> 1 at exit 2
    (0.004, [4, 3, 2, 2, 2]),   # row 3: 0.51 - 0.024 = 0.486 < 0.50 - 0.008 = 0.492
    # row 1 u = (-0.30, -0.40, 0.10, -0.50, -0.80) -> 4; row 2 u = (-0.10, 0.10, -0.20, -0.40, -0.50) -> 3
    (0.2, [4, 3, 2, 2, 2]),
])
def test_oracle_exits_are_the_hand_argmax(beta, expected):
    assert oracle_exits(TABLE, EXITS, beta).tolist() == expected


def test_oracle_exits_refuse_a_bad_beta():
    for beta in (-1e-4, math.inf, math.nan):
        with pytest.raises(ValueError, match="beta"):
            oracle_exits(TABLE, EXITS, beta)


FAST = ("--threads", "1", "--warmup", "0", "--timed", "1", "--batch-size", "4")


def test_derive_val_and_oracle_eval_equal_forced_exits(run):
    before = run.derived_path.read_bytes()
    summary = invoke_json("derive", "--split", "val", "--run", run.root, "--threads", "1")
    assert summary["num_images"] == 4 and summary["info"]["split"] == "val"
    assert run.derived_path.read_bytes() == before  # the training Step B is untouched
    wanted = [6, 2, 4, 2]
    hand_val_table(run, wanted)
    report = invoke_json("eval", "--gate", "oracle", "--beta", "0", "--run", run.root, *FAST)
    assert report["settings"]["oracle_beta"] == 0.0 and report["settings"]["gate"] is None
    assert report["exits"]["histogram"] == {"2": 2, "4": 1, "6": 1}
    oracle = load_parts(run.report_path(report["settings"]["name"]))
    assert oracle.exits.tolist() == wanted
    # a sweep never takes an oracle report for a point of its own (same settings but the oracle)
    from adaseg.analysis.sweep import read_parent, reusable
    from adaseg.engine.evaluate import EvalSettings

    full_depth = EvalSettings(batch_size=4, warmup=0, timed=1)
    assert reusable(run.report_path(report["settings"]["name"]), full_depth, read_parent(run), None,
                    torch.device("cpu"), need_parts=False) is None
    fixed = {}
    for k in sorted(set(wanted)):
        r = invoke_json("eval", "--exit", str(k), "--gate", "none", "--run", run.root, *FAST)
        fixed[k] = load_parts(run.report_path(r["settings"]["name"]))
    for i, k in enumerate(wanted):
        np.testing.assert_array_equal(np.asarray(oracle.pq[i]), np.asarray(fixed[k].pq[i]))
        np.testing.assert_array_equal(np.asarray(oracle.seg[i]), np.asarray(fixed[k].seg[i]))
        assert oracle.gflops_encoder[i] == pytest.approx(fixed[k].gflops_encoder[i], rel=1e-9)


def test_oracle_misuse_is_one_line(run):
    r = invoke("eval", "--gate", "oracle", "--beta", "0.001", "--run", run.root, *FAST)
    assert r.exit_code != 0 and "derive --split val" in r.output
    assert invoke("eval", "--gate", "oracle", "--run", run.root).exit_code == 2
    assert "needs --gate oracle" in invoke("eval", "--beta", "0.1", "--run", run.root).output
    r = invoke("eval", "--gate", "oracle", "--beta", "0.1", "--exit", "3", "--run", run.root)
    assert r.exit_code == 2 and "excludes --exit" in r.output
    # a training-split file under the val name is refused, not used
    val_derived_path(run).write_bytes(run.derived_path.read_bytes())
    r = invoke("eval", "--gate", "oracle", "--beta", "0.001", "--run", run.root, *FAST)
    assert r.exit_code != 0 and "not 'val'" in r.output
    # a val Step B of another dataset is refused too
    train = DerivedDataset.load(run.derived_path)
    DerivedDataset(exits=train.exits, quality=train.quality, features=train.features, metric=train.metric,
                   depth=train.depth, parent_fingerprint=train.parent_fingerprint, image_ids=train.image_ids,
                   info={**train.info, "split": "val", "data": "elsewhere"}).save(val_derived_path(run))
    r = invoke("eval", "--gate", "oracle", "--beta", "0.001", "--run", run.root, *FAST)
    assert r.exit_code == 2 and "scored 'elsewhere'" in r.output
