"""``adaseg sweep --oracle``: the oracle gate at the sweep's betas as points of the sweep (from
``derived_val.safetensors``), never on the front, never reused as a gate point. Oracle: a
hand-made val Step B table that sends each image to a chosen exit at beta 0 (quality 1 there,
0 elsewhere); the oracle row's exits must be those."""

from __future__ import annotations

import json

from recipe_testing import hand_val_table, invoke, invoke_json, refused


GRID = ["--exits", "2", "--betas", "0", "--limit", "4", "--bootstrap", "0", "--threads", "1"]


def _rows(run):
    return {r["point"]: r for r in json.loads((run.root / "sweeps" / "default" / "sweep.json").read_text())["rows"]}


def test_oracle_points_are_the_tables_exits_and_never_a_gate_point(run):
    invoke_json("derive", "--split", "val", "--run", run.root, "--threads", "1")
    wanted = [6, 2, 3, 2]
    hand_val_table(run, wanted)
    result = invoke("sweep", *GRID, "--oracle", "--run", run.root)
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = _rows(run)
    assert set(rows) == {"exit 2", "full depth", "gate beta=0", "oracle beta=0"}
    oracle, gate = rows["oracle beta=0"], rows["gate beta=0"]
    assert oracle["kind"] == "oracle" and oracle["origin"] == "oracle"
    assert oracle["exits_histogram"] == {"2": 2, "3": 1, "6": 1}
    assert oracle["on_front_gflops"] is False and oracle["on_front_ips"] is False
    assert oracle["eval"].endswith("--gate oracle --beta 0 --limit 4")
    assert gate["kind"] == "gate" and gate["report"] != oracle["report"]
    from adaseg.eval.image_parts import load_parts

    assert load_parts(run.root / oracle["report"]).exits.tolist() == wanted
    # the same sweep without --oracle: no oracle row, and its gate point is its own report
    result = invoke("sweep", *GRID, "--run", run.root)
    assert result.exit_code == 0, result.output
    again = _rows(run)
    assert "oracle beta=0" not in again and again["gate beta=0"]["reused"] is True
    assert again["gate beta=0"]["report"] == gate["report"]


def test_oracle_misuse_is_one_line_with_nothing_written(run):
    refused(run.root, "sweep", *GRID, "--oracle", "--run", str(run.root),
            expect="--oracle: ")
    line = refused(run.root, "sweep", "--exits", "2", "--betas", "none", "--oracle", "--run", str(run.root),
                   expect="--oracle evaluates the oracle gate at each of --betas")
    assert "derive --split val" not in line
    r = invoke("sweep", *GRID, "--oracle", "--run", run.root)
    assert r.exit_code != 0 and "derive --split val" in r.output
