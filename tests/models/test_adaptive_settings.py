"""AdaptiveSettings: every bad setting is refused where the object is built (one line naming
it), and the exit plan it makes, by hand (including a gate's choice)."""

from __future__ import annotations

import pytest
import torch

from adaseg.models.adaptive.plan import PausePlan
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.adaptive.gate import Gate


def test_defaults_and_spec_parsing():
    s = AdaptiveSettings()
    assert s.exits is None and s.pause is None and s.pause_mode == "entropy" and s.record_exits == ()
    assert AdaptiveSettings(pause="3:0.4,5:0.3").pause == PausePlan(((3, 0.4), (5, 0.3)))
    assert AdaptiveSettings(pause="none").pause is None
    assert AdaptiveSettings(record_exits=[2, 4]).record_exits == (2, 4)


@pytest.mark.parametrize("kwargs,message", [
    (dict(pause_mode="lowest"), "pause_mode must be one of entropy, random"),
    (dict(pause="3:1.5"), r"pause ratio must be in \(0, 1\)"),
    (dict(pause=0.3), "pause must be a PausePlan"),
    (dict(generator=torch.Generator()), "only used by random pausing"),
    (dict(generator=torch.Generator(), pause="2:0.5"), "only used by random pausing"),
    (dict(generator=3, pause="2:0.5", pause_mode="random"), "generator must be a torch.Generator"),
    (dict(record_exits=(3, 2)), "record_exits must be increasing positive layers"),
    (dict(record_exits=(0, 2)), "record_exits must be increasing positive layers"),
    (dict(record_exits=(2,), exits=3), "exclusive"),
    (dict(exits="auto"), "'gate', got 'auto'"),
    (dict(exits=0), "an exit is an encoder layer >= 1"),
    (dict(exits=True), "an exit is an encoder layer >= 1"),
    (dict(exits=2.5), "exits must be None, an int"),
    (dict(keep_aux="yes"), "keep_aux must be True, False or None"),
])
def test_bad_settings_fail_where_built(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        AdaptiveSettings(**kwargs)


def test_depth_checks():
    AdaptiveSettings(pause="5:0.5", exits=6, record_exits=()).check_depth(6)
    with pytest.raises(ValueError, match="below the encoder depth 6"):
        AdaptiveSettings(pause="6:0.5").check_depth(6)
    with pytest.raises(ValueError, match=r"exits must be in 1..6, got 7"):
        AdaptiveSettings(exits=7).check_depth(6)
    with pytest.raises(ValueError, match=r"record_exits must be in 1..6"):
        AdaptiveSettings(record_exits=(2, 7)).check_depth(6)


@torch.no_grad()
def test_exit_plan_by_hand():
    gate = Gate(in_channels=2, exits=(2, 4, 6))
    gate.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    gate.linear.bias.zero_()
    feats = torch.tensor([[3.0, 1.0], [0.0, 2.0], [-1.0, -2.0]])  # argmax 0, 1, 2 -> exits 2, 4, 6
    common = dict(batch_size=3, depth=6, gate_features=feats)
    plan = AdaptiveSettings(exits="gate").exit_plan(gate=gate, **common)
    assert plan.dtype == torch.long and plan.tolist() == [2, 4, 6]
    assert AdaptiveSettings().exit_plan(**common).tolist() == [6, 6, 6]
    assert AdaptiveSettings(exits=3).exit_plan(**common).tolist() == [3, 3, 3]
    assert AdaptiveSettings(exits=torch.tensor([1, 5, 2])).exit_plan(**common).tolist() == [1, 5, 2]
    assert AdaptiveSettings(exits=[1, 5, 2]).exit_plan(**common).tolist() == [1, 5, 2]
    assert AdaptiveSettings(record_exits=(2, 6)).exit_plan(**common) is None
    with pytest.raises(ValueError, match="set_gate"):
        AdaptiveSettings(exits="gate").exit_plan(**common)
    with pytest.raises(ValueError, match="exits must be in 1..6"):
        AdaptiveSettings(exits=[1, 7, 2]).exit_plan(**common)
    with pytest.raises(ValueError, match="3 entries for a batch of 2"):
        AdaptiveSettings(exits=[1, 5, 2]).exit_plan(batch_size=2, depth=6, gate_features=feats[:2])
