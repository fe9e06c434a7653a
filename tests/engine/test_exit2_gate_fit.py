"""``fit-gate --features exit2`` through Step B and Step C: the derived dataset records the
exit-2 features (equal to a hand-written per-level mean of the tokens a separate fixed-exit-2
pass leaves), the gate is fitted on them and named by them, eval uses what the gate file says,
and derived datasets without them (older files, parents that cannot provide them) are
refused in one line with nothing written."""

from __future__ import annotations

import pytest
import torch
from recipe_testing import invoke_json, refused

from adaseg.engine.fit_gate import fit_gate
from adaseg.runs.derived import DerivedDataset


def _learnable_from_exit2(make_derived, n=200):
    """A derived dataset whose best exit is a linear function of its exit-2 features while its
    backbone features are noise."""
    derived = make_derived(n=n, c=6, seed=1)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(n, 12, generator=g)
    best = (z @ torch.randn(5, 12, generator=g).T).argmax(1)
    q = torch.full((n, 5), 0.5, dtype=torch.float64)
    q[torch.arange(n), best] = 0.6
    return DerivedDataset(exits=derived.exits, quality=q, features=torch.randn(n, 6, generator=g),
                          metric="pq", depth=6, parent_fingerprint=derived.parent_fingerprint,
                          image_ids=derived.image_ids, exit2_features=z)


def test_fit_reads_the_features_it_is_asked_for(make_derived):
    derived = _learnable_from_exit2(make_derived)
    exit2 = fit_gate(derived, beta=0.0, features="exit2", epochs=60)
    backbone = fit_gate(derived, beta=0.0, epochs=60)
    assert exit2.weight.shape == (5, 12) and backbone.weight.shape == (5, 6)
    assert exit2.train_accuracy > 0.8 > 0.5 > backbone.train_accuracy, (exit2.train_accuracy, backbone.train_accuracy)
    assert exit2.summary()["features"] == "exit2" and "features" not in backbone.summary()


def test_derive_records_exit2_features_of_a_fixed_exit2_pass(run):
    """Oracle: each training image alone through the parent at fixed exit 2, its tokens
    averaged per level by hand."""
    from adaseg.data import collate
    from adaseg.models.adaptive.settings import AdaptiveSettings
    from adaseg.runs.parent import load_parent
    from adaseg.runs.run_data import build_run_dataset

    derived = DerivedDataset.load(run.derived_path)
    assert derived.exit2_features is not None and "exit2_refusal" not in derived.info
    model, _ = load_parent(run.parent_path, device=torch.device("cpu"))
    dataset, _ = build_run_dataset(run.read_config(), None, "train")
    assert derived.exit2_features.shape == (len(dataset), model.exit2_channels)
    for i in range(3):
        batch = collate([dataset[i]])
        with torch.no_grad():
            prep = model.prepare(batch["images"], batch["padding_mask"])
            enc = model.encode(prep, settings=AdaptiveSettings(exits=2), exit_plan=torch.tensor([2]), keep_aux=False)
        tokens, start, parts = enc.tokens[0], 0, []
        mask = prep.pixel.token_mask
        for h, w in prep.token_shapes.tolist():
            level = tokens[start:start + h * w]
            if mask is not None:
                level = level[~mask[0, start:start + h * w]]
            parts.append(level.mean(0))
            start += h * w
        torch.testing.assert_close(derived.exit2_features[i], torch.cat(parts), atol=1e-5, rtol=1e-4)


def test_exit2_gate_is_fitted_named_and_used_by_eval(run):
    backbone_gate = run.gates_dir / "gate_beta0.0005_K6_hard-ce.safetensors"
    before = backbone_gate.read_bytes()
    summary = invoke_json("fit-gate", "--beta", "0.0005", "--features", "exit2", "--epochs", "2", "--run", run.root)
    path = run.gates_dir / "gate_beta0.0005_K6_hard-ce_exit2.safetensors"
    assert summary["path"] == str(path) and summary["features"] == "exit2"
    assert backbone_gate.read_bytes() == before  # the paper's gate of the same settings is not replaced
    from adaseg.runs.gate_file import load_gate
    from adaseg.runs.parent import load_parent

    gate, meta = load_gate(path, parent_fingerprint=None)
    model, _ = load_parent(run.parent_path, device=torch.device("cpu"))
    assert gate.features == "exit2" and meta["config"]["features"] == "exit2"
    assert gate.in_channels == model.exit2_channels
    report = invoke_json("eval", "--gate", str(path), "--limit", "2", "--flops-images", "1", "--timed", "1",
                         "--warmup", "0", "--threads", "1", "--run", run.root)
    assert report["settings"]["gate_settings"]["features"] == "exit2"
    assert sum(report["exits"]["histogram"].values()) == 2
    assert all(int(k) >= 2 for k in report["exits"]["histogram"])
    # the Predictor runs what the gate file says too: each image's exit is the eval's
    import adaseg
    from adaseg.eval.image_parts import load_parts
    from adaseg.runs.run_data import build_run_dataset

    evaluated = load_parts(run.report_path(report["settings"]["name"])).exits.tolist()
    dataset, _ = build_run_dataset(run.read_config(), None, "val")
    preds = adaseg.Predictor(str(run.root), gate=str(path)).predict_dataset(dataset, indices=[0, 1])
    assert [p.exit for p in preds] == evaluated

    # a pause after layer 2 leaves the map the gate reads as it was: the same exits
    paused = invoke_json("eval", "--gate", str(path), "--pause", "2:0.5", "--limit", "2", "--flops-images", "1",
                         "--timed", "1", "--warmup", "0", "--threads", "1", "--run", run.root)
    assert load_parts(run.report_path(paused["settings"]["name"])).exits.tolist() == evaluated
    # a pause after layer 1 would hand it tokens Step B never paused: refused everywhere, nothing written
    expect = "pause layer 1 comes before the exit-2 gate's decision after layer 2"
    refused(run.root, "eval", "--gate", str(path), "--pause", "1:0.5", "--limit", "2", "--run", str(run.root),
            expect=expect)
    refused(run.root, "sweep", "--betas", "0.0005", "--features", "exit2", "--pause", "1:0.5", "--limit", "2",
            "--run", str(run.root), expect=expect)
    from adaseg.predict.predictor import PredictError

    with pytest.raises(PredictError, match=expect):
        adaseg.Predictor(str(run.root), gate=str(path), pause="1:0.5")
    from adaseg.models.adaptive.settings import AdaptiveSettings

    model.set_gate(gate)
    with pytest.raises(ValueError, match=expect):
        model(torch.zeros(1, 3, 64, 64), None, AdaptiveSettings(exits="gate", pause="1:0.5"))
    model(torch.zeros(1, 3, 64, 64), None, AdaptiveSettings(exits="gate", pause="2:0.5"))


def test_older_derived_file_is_refused_with_the_command_to_run(make_run):
    run = make_run(n=40)  # written as before exit-2 features existed: none recorded, no reason
    line = refused(run.root, "fit-gate", "--beta", "0.0005", "--features", "exit2", "--run", str(run.root),
                   expect=f"predates exit-2 features: run `adaseg derive --run {run.root}` again")
    assert "--features" in line


def test_parent_that_cannot_provide_them_is_refused_at_fit_time(make_run):
    run = make_run(n=40)
    derived = DerivedDataset.load(run.derived_path)
    derived.info["exit2_refusal"] = "SegmenterModel does not provide its encoder tokens after layer 2 as pooled levels"
    derived.save(run.derived_path)
    refused(run.root, "fit-gate", "--beta", "0.0005", "--features", "exit2", "--run", str(run.root),
            expect="gates fitted on features the parent cannot provide are refused: SegmenterModel does not provide")
    invoke_json("fit-gate", "--beta", "0.0005", "--epochs", "2", "--run", str(run.root))  # the paper's gate still fits
