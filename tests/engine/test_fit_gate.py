"""Step C as a plain function: learns the targets, restricts exits to K, handles undefined
quality, reports costs, and writes/loads gates that know their parent."""

from __future__ import annotations

import pytest
import torch

from adaseg.models.adaptive.gate import Gate
from adaseg.storage.checkpoint import load_into
from adaseg.engine.fit_gate import GateSettingError, fit_gate, load_gate, resolve_gate, save_gate
from adaseg.engine.gate_targets import LOSSES, prepare_quality, targets
from adaseg.runs.derived import load_run_derived
from adaseg.runs.parent import parent_fingerprint
from adaseg.runs.run_dir import RunDirError

FAST = dict(epochs=60, lr=0.05, batch_size=64)


@pytest.mark.parametrize("loss", LOSSES)
def test_gate_learns_learnable_targets(make_derived, loss):
    d = make_derived(n=200, c=6)
    temperature = 0.01 if loss in ("soft-ce", "soft-mse") else None
    fit = fit_gate(d, beta=0.0, loss=loss, temperature=temperature, **FAST)
    assert fit.exits == [2, 3, 4, 5, 6] and fit.weight.shape == (5, 6)
    # independent check: apply the saved (raw-feature) weights ourselves
    pred = (d.features.double() @ fit.weight.double().T + fit.bias.double()).argmax(1)
    t = targets(prepare_quality(d.quality)[0], d.exits, 0.0)
    accuracy = float((pred == t).double().mean())
    assert accuracy == pytest.approx(fit.train_accuracy, abs=2 / 200)  # float32 vs float64 near-ties
    # u-CE's weights (0.5 vs 0.6) make an almost flat target distribution: a weaker signal
    assert accuracy > (0.6 if loss == "u-ce" else 0.85), f"{loss}: {accuracy}"
    assert fit.loss_history[-1] < fit.loss_history[0]


def test_costs_and_counts_by_hand(make_derived):
    d = make_derived(n=50)
    t = d.quality.argmax(1)
    fit = fit_gate(d, beta=0.0, **FAST)
    exits = torch.tensor([2, 3, 4, 5, 6])
    assert fit.target_counts == {e: int((t == j).sum()) for j, e in enumerate(exits.tolist())}
    assert fit.target_cost_layers == pytest.approx(float(exits[t].double().mean()))
    assert fit.target_cost_relative == pytest.approx(fit.target_cost_layers / 6)
    assert fit.quality_at_targets == pytest.approx(0.6) and fit.quality_at_full == pytest.approx(float(d.quality[:, -1].mean()))
    assert sum(fit.gate_counts.values()) == 50


def test_large_beta_sends_everything_to_the_first_exit(make_derived):
    fit = fit_gate(make_derived(n=60), beta=1.0, **FAST)
    assert fit.target_counts[2] == 60 and fit.target_cost_layers == 2.0
    assert fit.gate_counts[2] == 60 and fit.gate_cost_relative == pytest.approx(2 / 6)


@pytest.mark.parametrize("K, exits", [(4, [2, 3, 4]), (2, [2]), (6, [2, 3, 4, 5, 6])])
def test_K_restricts_exits(make_derived, K, exits):
    d = make_derived(n=40)
    fit = fit_gate(d, beta=0.0, K=K, **FAST)
    assert fit.exits == exits and fit.weight.shape[0] == len(exits) and fit.K == K
    cols = len(exits)
    assert fit.target_counts == {e: int((d.quality[:, :cols].argmax(1) == j).sum()) for j, e in enumerate(exits)}


def test_undefined_rows_are_excluded(make_derived):
    d = make_derived(n=50, nan_rows=7)
    fit = fit_gate(d, beta=0.0, **FAST)
    assert fit.num_excluded == 7 and fit.num_images == 43
    assert sum(fit.target_counts.values()) == 43


def test_all_undefined_is_an_error(make_derived):
    d = make_derived(n=5, nan_rows=5)
    with pytest.raises(GateSettingError, match="undefined quality"):
        fit_gate(d, beta=0.0, **FAST)


def test_same_seed_same_gate(make_derived):
    d = make_derived(n=80)
    a = fit_gate(d, beta=0.001, seed=3, **FAST)
    b = fit_gate(d, beta=0.001, seed=3, **FAST)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_standardisation_is_folded_into_the_layer(make_derived):
    """Features with a huge offset and scale still train (conditioning) and the saved layer
    applies to the raw features."""
    d = make_derived(n=120)
    d.features = d.features * 1000.0 + 5000.0
    fit = fit_gate(d, beta=0.0, **FAST)
    assert fit.train_accuracy > 0.85


@pytest.mark.parametrize(
    "kwargs, param",
    [
        (dict(beta=-0.1), "beta"),
        (dict(beta=float("nan")), "beta"),
        (dict(beta=0.0, K=7), "K"),
        (dict(beta=0.0, K=1), "K"),
        (dict(beta=0.0, loss="focal"), "loss"),
        (dict(beta=0.0, loss="hard-ce", temperature=0.1), "temperature"),
        (dict(beta=0.0, loss="soft-ce", temperature=-1.0), "temperature"),
    ],
)
def test_bad_settings(make_derived, kwargs, param):
    with pytest.raises(GateSettingError) as err:
        fit_gate(make_derived(n=10), **kwargs)
    assert err.value.param == param


def test_save_load_into_gate_module(make_run):
    run = make_run(n=60)
    d = load_run_derived(run)
    fit = fit_gate(d, beta=0.0005, K=5, **FAST)
    path = save_gate(run, fit, d)
    assert path.name == "gate_beta0.0005_K5_hard-ce.safetensors" and path.with_suffix(".json").is_file()
    gate, meta = load_gate(path, parent_fingerprint=parent_fingerprint(run))
    assert isinstance(gate, Gate) and gate.exits == (2, 3, 4, 5)
    assert meta["extra"]["beta"] == 0.0005 and meta["extra"]["derived_fingerprint"] == d.fingerprint()
    # the model's own module accepts the file too, and predicts the exits the fit reported
    fresh = Gate(in_channels=8, exits=(2, 3, 4, 5))
    load_into(fresh, path)
    picks = fresh.predict(d.features)
    assert {e: int((picks == e).sum()) for e in (2, 3, 4, 5)} == fit.gate_counts


def test_gate_of_another_parent_is_refused(make_run):
    run = make_run(n=30)
    d = load_run_derived(run)
    path = save_gate(run, fit_gate(d, beta=0.0, **FAST), d)
    with pytest.raises(RunDirError, match="was fitted for parent .* fit it again"):
        load_gate(path, parent_fingerprint="1" * 64)


def test_resolve_gate(make_run):
    run = make_run(n=30)
    d = load_run_derived(run)
    assert resolve_gate(run, "none") is None
    first = save_gate(run, fit_gate(d, beta=0.0, **FAST), d)
    second = save_gate(run, fit_gate(d, beta=0.5, **FAST), d)
    assert resolve_gate(run, "latest") == second
    assert resolve_gate(run, first.name) == first and resolve_gate(run, str(first)) == first
    with pytest.raises(RunDirError, match="no such file"):
        resolve_gate(run, "gate_missing.safetensors")
