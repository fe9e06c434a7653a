"""Names and records carry numbers exactly: the text reads back as the same float."""

from __future__ import annotations

import random

import pytest

from adaseg.exact import exact_float
from adaseg.models.adaptive.plan import PausePlan
from adaseg.runs.run_dir import gate_stem


@pytest.mark.parametrize(
    "x, text",
    [
        (0.0005, "0.0005"), (0.0, "0"), (1e-05, "1e-05"), (0.05, "0.05"), (2.0, "2"), (0.4, "0.4"),
        (0.00050000001, "0.00050000001"),  # :g said 0.0005
        (0.9999999, "0.9999999"),  # :g said 1
        (0.1 + 0.2, "0.30000000000000004"),
        (1234567.0, "1234567.0"),  # :g said 1.23457e+06
    ],
)
def test_exact_float_hand_cases(x, text):
    assert exact_float(x) == text and float(text) == x


def test_exact_float_round_trips_random_floats():
    rng = random.Random(0)
    for _ in range(2000):
        x = rng.random() * 10 ** rng.randint(-12, 6)
        assert float(exact_float(x)) == x


def test_gate_names_are_exact():
    assert gate_stem(beta=0.0005, K=6, loss="hard-ce") == "gate_beta0.0005_K6_hard-ce"
    assert gate_stem(beta=0.00050000001, K=6, loss="hard-ce") == "gate_beta0.00050000001_K6_hard-ce"
    assert gate_stem(beta=0.005, K=6, loss="soft-ce", temperature=0.0200000001) == \
        "gate_beta0.005_K6_soft-ce_T0.0200000001"


def test_pause_plan_text_round_trips():
    assert str(PausePlan.parse("5:0.9999999")) == "5:0.9999999"
    assert str(PausePlan.parse("3:0.4,5:0.3")) == "3:0.4,5:0.3"
    rng = random.Random(1)
    for _ in range(500):
        plan = PausePlan(((2, rng.uniform(1e-9, 1 - 1e-9)), (4, rng.random() or 0.5)))
        assert PausePlan.parse(str(plan)) == plan


@pytest.mark.parametrize("spec", ["", "  "])
def test_an_empty_pause_spec_is_an_error(spec):
    with pytest.raises(ValueError, match="the pause spec is empty"):
        PausePlan.parse(spec)
    assert PausePlan.parse("none") is None and PausePlan.parse(None) is None
