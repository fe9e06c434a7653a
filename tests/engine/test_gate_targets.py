"""Step C's targets (Eq. 4-5), undefined-quality policy and the four losses (Table T2),
checked against hand computations and plain-numpy formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adaseg.engine.gate_targets import LOSSES, gate_loss, prepare_quality, targets, utility

EXITS = torch.tensor([2, 3, 4])


@pytest.mark.parametrize(
    "beta, expected",
    [
        # q = (0.50, 0.52, 0.53): u = q - beta*exit
        (0.0, 2),      # best quality: exit 4
        (0.005, 2),    # u = 0.490, 0.505, 0.510
        (0.015, 1),    # u = 0.470, 0.475, 0.470
        (0.05, 0),     # u = 0.400, 0.370, 0.330
    ],
)
def test_targets_by_hand(beta, expected):
    q = torch.tensor([[0.50, 0.52, 0.53]], dtype=torch.float64)
    assert targets(q, EXITS, beta).tolist() == [expected]


def test_ties_pick_earliest_exit():
    q = torch.tensor([[0.5, 0.5, 0.5]], dtype=torch.float64)
    assert targets(q, EXITS, 0.0).tolist() == [0]
    # beta*exit uses the exit's layer, not its column: exits (2, 6), q (0.5, 0.75), beta 1/16
    # -> u = 0.375, 0.375 (exact in binary): tie -> exit 2 (columns would give 0.4375 vs 0.625)
    q2 = torch.tensor([[0.5, 0.75]], dtype=torch.float64)
    assert utility(q2, torch.tensor([2, 6]), 0.0625).tolist() == [[0.375, 0.375]]
    assert targets(q2, torch.tensor([2, 6]), 0.0625).tolist() == [0]


def test_undefined_policy():
    nan = math.nan
    q = torch.tensor([[0.2, 0.3, 0.4], [nan, nan, nan], [nan, 0.0, 0.0], [0.5, nan, 0.6]], dtype=torch.float64)
    prepared, keep = prepare_quality(q)
    assert keep.tolist() == [True, False, True, True]
    assert prepared.tolist() == [[0.2, 0.3, 0.4], [1.0, 0.0, 0.0], [0.5, 1.0, 0.6]]
    # the empty-ground-truth image whose exit 2 predicted nothing targets exit 2
    assert targets(prepared, EXITS, 0.0).tolist() == [2, 0, 1]


def _np_softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _np_loss(loss, g, u, t, temp):
    p = _np_softmax(g)
    n = g.shape[0]
    if loss == "hard-ce":
        return -np.mean([math.log(p[i, t[i]]) for i in range(n)])
    if loss == "u-ce":
        return -np.mean([sum(max(u[i, k], 0.0) * math.log(p[i, k]) for k in range(g.shape[1])) for i in range(n)])
    s = _np_softmax(u / temp)
    if loss == "soft-ce":
        return -np.mean((s * np.log(p)).sum(1))
    return np.mean(((s - p) ** 2).sum(1))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("temp", [1.0, 0.05])
def test_losses_match_numpy(loss, temp):
    rng = np.random.default_rng(0)
    g = rng.normal(size=(5, 3))
    u = rng.uniform(-0.1, 0.7, size=(5, 3))  # some negative utilities (u-CE clamps them)
    t = u.argmax(1)
    got = gate_loss(torch.tensor(g), loss=loss, u=torch.tensor(u), target=torch.tensor(t), temperature=temp)
    assert float(got) == pytest.approx(_np_loss(loss, g, u, t, temp), rel=1e-10)


def test_u_ce_is_bounded_below_with_negative_utility():
    u = torch.tensor([[-0.5, 0.2]], dtype=torch.float64)
    g = torch.tensor([[-50.0, 50.0]], dtype=torch.float64)  # drives p(exit with u<0) -> 0
    value = gate_loss(g, loss="u-ce", u=u, target=torch.tensor([1]))
    assert float(value) >= 0.0


def test_unknown_loss_and_bad_temperature():
    g, u, t = torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="loss must be one of"):
        gate_loss(g, loss="focal", u=u, target=t)
    with pytest.raises(ValueError, match="temperature"):
        gate_loss(g, loss="soft-ce", u=u, target=t, temperature=0.0)
