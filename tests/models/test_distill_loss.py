"""Self-distillation of the early exits toward the deepest (issue 24; train-parent --distill).

Oracles: the two terms worked out by hand (math, not torch) on a one-image, one-query case;
the criterion's total == its base loss + lambda * sum_{k<K} alpha_k (D_cls + D_mask) at the
same random state; and train-parent refusing/recording the option.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from recipe_testing import TRAIN_FAST, invoke, invoke_json

from adaseg.models.adaptive.losses import exit_distillation

LN3 = math.log(3.0)


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_distillation_terms_by_hand(temperature):
    t_logits = torch.tensor([[[0.0, LN3]]], dtype=torch.float64, requires_grad=True)  # (B=1, Q=1, C+1=2)
    s_logits = torch.tensor([[[0.0, 0.0]]], dtype=torch.float64, requires_grad=True)
    t_masks = torch.tensor([[[[0.0, LN3]]]], dtype=torch.float64, requires_grad=True)  # (1, 1, H=1, W=2)
    s_masks = torch.tensor([[[[LN3, 0.0]]]], dtype=torch.float64, requires_grad=True)
    d_cls, d_mask = exit_distillation(s_logits, s_masks, t_logits, t_masks, temperature=temperature)
    # teacher at T: softmax(0, ln3 / T) = (1, 3^(1/T)) / (1 + 3^(1/T)); the student is uniform
    r = 3.0 ** (1.0 / temperature)
    p_t = (1 / (1 + r), r / (1 + r))
    (d_cls + d_mask).backward()
    assert t_logits.grad is None and t_masks.grad is None  # the teacher is detached
    assert s_logits.grad.abs().sum() > 0 and s_masks.grad.abs().sum() > 0
    d_cls, d_mask = d_cls.detach(), d_mask.detach()
    assert float(d_cls) == pytest.approx(temperature ** 2 * _kl(p_t, (0.5, 0.5)), rel=1e-6)
    # pixel 1: y = 1/2, sigmoid(s) = 3/4; pixel 2: y = 3/4, sigmoid(s) = 1/2
    bce1 = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    bce2 = -(0.75 * math.log(0.5) + 0.25 * math.log(0.5))
    assert float(d_mask) == pytest.approx((bce1 + bce2) / 2, rel=1e-6)


def test_identical_exits_distill_to_zero_class_term_and_entropy_mask_term():
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    masks = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    d_cls, d_mask = exit_distillation(logits, masks, logits, masks, temperature=1.5)
    y = masks.sigmoid()
    entropy = -(y * y.log() + (1 - y) * (1 - y).log()).mean()
    assert float(d_cls) == pytest.approx(0.0, abs=1e-6)
    assert float(d_mask) == pytest.approx(float(entropy), rel=1e-5)


def test_criterion_adds_lambda_times_alpha_weighted_terms():
    from adaseg.models.adaptive.settings import AdaptiveSettings
    from adaseg.runs.parent import build_model, model_options_for
    from adaseg.data import build_dataset, collate

    data = build_dataset("synthetic", "val", synthetic={"n_train": 1, "n_val": 2, "size": 64, "seed": 0})
    model = build_model("m2f_tiny", model_options_for("m2f_tiny", data.meta, None)).train()
    batch = collate([data[0], data[1]])
    torch.manual_seed(0)
    with torch.no_grad():  # the losses are compared as numbers here
        out = model(batch["images"], batch["padding_mask"], AdaptiveSettings(record_exits=(2, 4, 6)))
    alphas = {2: 0.25, 4: 0.5, 6: 1.0}
    lam = 0.7
    plain = model.build_criterion()
    with_distill = model.build_criterion(distill_weight=lam, distill_temperature=2.0)
    torch.manual_seed(1)
    base = plain(out, batch["targets"], exit_weights=alphas)
    torch.manual_seed(1)
    got = with_distill(out, batch["targets"], exit_weights=alphas)
    expected = 0.0
    for k in (2, 4):
        d_cls, d_mask = exit_distillation(out.exits[k]["pred_logits"], out.exits[k]["pred_masks"],
                                          out.exits[6]["pred_logits"], out.exits[6]["pred_masks"], temperature=2.0)
        assert float(got[f"loss_distill_exit{k}"]) == pytest.approx(float(d_cls + d_mask), rel=1e-6)
        expected += alphas[k] * float(d_cls + d_mask)
    assert "loss_distill_exit6" not in got
    assert float(got["loss"]) == pytest.approx(float(base["loss"]) + lam * expected, rel=1e-5)


def test_train_parent_records_and_refuses_distill(tmp_path, folder):
    r = invoke("train-parent", "--data", folder, *TRAIN_FAST, "--recipe", "standard", "--distill", "0.5",
               "--run", tmp_path / "a")
    assert r.exit_code == 2 and "needs the exits a wsd recipe trains" in r.output
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    r = invoke("train-parent", "--data", folder, *TRAIN_FAST, "--recipe", "wsd", "--distill-temperature", "2",
               "--run", tmp_path / "b")
    assert r.exit_code == 2 and "needs --distill" in r.output
    summary = invoke_json("train-parent", "--data", folder, *TRAIN_FAST, "--recipe", "wsd", "--distill", "0.5",
                          "--distill-temperature", "2", "--run", tmp_path / "c")
    assert summary["distill"] == 0.5 and summary["distill_temperature"] == 2.0
    assert "loss_distill" in summary["losses"]
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["train"]["distill"] == 0.5 and config["train"]["distill_temperature"] == 2.0
