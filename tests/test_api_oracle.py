"""``adaseg.evaluate(run, gate="oracle", beta=B)``: the oracle gate through the Python API, as
``adaseg eval --gate oracle --beta B``. Oracle: a hand-made val Step B table that sends each
image to a chosen exit at beta 0 (quality 1 there, 0 elsewhere); the report's per-image exits
must be those."""

from __future__ import annotations

import pytest
from recipe_testing import hand_val_table, invoke_json

import adaseg


def test_evaluate_oracle_sends_each_image_to_its_table_exit(run):
    invoke_json("derive", "--split", "val", "--run", run.root, "--threads", "1")
    wanted = [3, 6, 2, 2]
    hand_val_table(run, wanted)
    before = sorted(run.root.rglob("*"))
    report = adaseg.evaluate(run.root, gate="oracle", beta=0.0, warmup=0, timed=1, batch_size=4)
    assert sorted(run.root.rglob("*")) == before  # the API writes nothing
    assert report.settings["oracle_beta"] == 0.0 and report.settings["gate"] is None
    assert report.exits["histogram"] == {"2": 2, "3": 1, "6": 1}
    assert report.parts.exits.tolist() == wanted


def test_evaluate_oracle_without_val_step_b_is_one_line(run):
    with pytest.raises(ValueError, match=r"no Step B on the val images \(derived_val.safetensors\)") as info:
        adaseg.evaluate(run.root, gate="oracle", beta=0.001)
    assert "\n" not in str(info.value)
