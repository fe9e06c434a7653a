"""ECO-M2F's weighted sum over exits (adaseg.models.adaptive.losses), checked by hand."""

from __future__ import annotations

import pytest
import torch

from adaseg.models.adaptive.losses import weighted_exit_loss


def test_weighted_sum_by_hand():
    exits = {2: {"x": torch.tensor(1.5)}, 4: {"x": torch.tensor(-2.0)}, 6: {"x": torch.tensor(4.0)}}
    seen = []

    def loss_of(out):
        seen.append(float(out["x"]))
        return {"total": out["x"] * 2, "part": out["x"]}

    losses = weighted_exit_loss(exits, {2: 0.5, 4: 0.25, 6: 1.0}, loss_of)
    assert seen == [1.5, -2.0, 4.0]  # once per exit, in the order of the exits
    assert float(losses.total) == 0.5 * 3.0 + 0.25 * -4.0 + 1.0 * 8.0
    assert list(losses.per_exit) == ["loss_exit2", "loss_exit4", "loss_exit6"]
    assert [float(v) for v in losses.per_exit.values()] == [3.0, -4.0, 8.0]
    assert float(losses.deepest["part"]) == 4.0


@pytest.mark.parametrize("weights", [None, {2: 1.0}, {2: 1.0, 4: 1.0, 5: 1.0}])
def test_bad_weights_fail_before_any_loss(weights):
    def loss_of(out):
        raise AssertionError("loss computed before the weights were checked")

    with pytest.raises(ValueError, match=r"exit_weights must give a weight for each exit \[2, 4\]"):
        weighted_exit_loss({2: {}, 4: {}}, weights, loss_of)


def test_no_exits():
    with pytest.raises(ValueError, match="empty"):
        weighted_exit_loss({}, {}, lambda out: {"total": torch.tensor(0.0)})
