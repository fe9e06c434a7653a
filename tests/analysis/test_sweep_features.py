"""``adaseg sweep --features exit2``: the sweep's gate points are exit-2 gates (decided after
layer 2), fitted from Step B exactly as ``adaseg fit-gate --features exit2`` fits them, and
evaluated exactly as ``adaseg eval --gate FILE_exit2``. Oracles: the gate file fit-gate writes
(tensor for tensor) and the per-image exits of a separate ``adaseg eval`` of that file; the
paper's backbone gate of the same beta is left as it was."""

from __future__ import annotations

import json

import torch

from recipe_testing import invoke, invoke_json, refused

GRID = ["--exits", "2", "--betas", "0.0005", "--limit", "4", "--flops-images", "1", "--bootstrap", "0",
        "--threads", "1"]


def _rows(run, name):
    return {r["point"]: r for r in json.loads((run.root / "sweeps" / name / "sweep.json").read_text())["rows"]}


def test_exit2_gate_points_are_fit_gate_and_eval_of_the_exit2_file(run, tmp_path):
    from adaseg.eval.image_parts import load_parts
    from adaseg.storage.checkpoint import load_checkpoint

    backbone = run.gates_dir / "gate_beta0.0005_K6_hard-ce.safetensors"
    before = backbone.read_bytes() if backbone.is_file() else None
    # the oracle: fit-gate's own exit-2 gate and eval's exits with it, taken aside first
    invoke_json("fit-gate", "--beta", "0.0005", "--features", "exit2", "--run", run.root)
    path = run.gates_dir / "gate_beta0.0005_K6_hard-ce_exit2.safetensors"
    want_tensors, _ = load_checkpoint(path)
    report = invoke_json("eval", "--gate", str(path), "--limit", "4", "--flops-images", "1", "--timed", "1",
                         "--warmup", "0", "--threads", "1", "--run", run.root)
    want_exits = load_parts(run.report_path(report["settings"]["name"])).exits.tolist()
    aside = tmp_path / "aside"
    aside.mkdir()
    path.rename(aside / path.name)
    for p in run.reports_dir.glob("eval_gate_*exit2*"):
        p.unlink()

    result = invoke("sweep", *GRID, "--features", "exit2", "--name", "e2", "--run", run.root)
    assert result.exit_code == 0, result.output + repr(result.exception)
    sweep = json.loads((run.root / "sweeps" / "e2" / "sweep.json").read_text())
    assert sweep["settings"]["features"] == "exit2"
    row = _rows(run, "e2")["gate beta=0.0005"]
    assert "_exit2" in row["report"] and row["eval"].endswith(f"--gate {path} --limit 4 --flops-images 1")
    got_tensors, meta = load_checkpoint(path)  # fitted by the sweep (it was missing)
    assert meta.config["features"] == "exit2"
    assert want_tensors.keys() == got_tensors.keys()
    for k in want_tensors:
        assert torch.equal(want_tensors[k], got_tensors[k]), k
    assert load_parts(run.root / row["report"]).exits.tolist() == want_exits
    assert (backbone.read_bytes() if backbone.is_file() else None) == before

    # the default sweep's gate point is still the paper's gate, its own report
    result = invoke("sweep", *GRID, "--name", "bb", "--run", run.root)
    assert result.exit_code == 0, result.output
    bb = _rows(run, "bb")["gate beta=0.0005"]
    assert "_exit2" not in bb["report"] and bb["report"] != row["report"]


def test_features_misuse_is_one_line_with_nothing_written(run):
    refused(run.root, "sweep", "--exits", "2", "--betas", "none", "--features", "exit2", "--run", str(run.root),
            expect="--features exit2 chooses the gates' input: it needs --betas")
    refused(run.root, "sweep", *GRID, "--features", "exit3", "--run", str(run.root), expect="exit3")


def test_a_derived_file_without_exit2_features_is_refused_before_any_work(run):
    from adaseg.runs.derived import DerivedDataset

    derived = DerivedDataset.load(run.derived_path)
    derived.exit2_features = None  # as derive wrote it before exit-2 features existed
    derived.save(run.derived_path)
    refused(run.root, "sweep", *GRID, "--features", "exit2", "--run", str(run.root),
            expect=f"predates exit-2 features: run `adaseg derive --run {run.root}` again")
