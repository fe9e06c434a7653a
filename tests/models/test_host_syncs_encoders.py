"""Device-to-host reads of the Lite and RT encoders (tests/models/test_host_syncs.py covers
m2f_tiny and segmenter_tiny; the counting helper is its).

The reads an ``m2f_lite_tiny`` / ``m2f_rt_tiny`` forward makes, counted by hand from the code:

* the 5 every Mask2Former makes (the plan's range: 2; the run's one read of the plan: 1; the
  pixel decoder's level shapes after the encoder: 2);
* ``lite``: 1 per forward (where the stride-8 tokens start, ``level_start_index``), plus 1 per
  pause stage that a high-level layer follows (the number of active high-level tokens is the
  query count, a shape): a pause after layer l <= K-2. Images leaving the run at their exits
  add none (the remaining images' active sets do not change, so the last count still bounds
  them and the per-image validity is recomputed on the device);
* ``rt``: 1 per forward (the level shapes, to cut the token map into maps). It refuses pause
  plans (``pause_refusal``: its layers after AIFI are dense convolutions) before any read.

None of them is per layer: the same model at a shallow and the full exit, with pause stages
after every layer (lite), and with mixed exits, gives the counts above.
"""

from __future__ import annotations

import pytest
import torch
from test_host_syncs import _model, _reads, counted_reads

from adaseg.models.adaptive.settings import AdaptiveSettings

BASE = 5  # reads of every Mask2Former forward (see tests/models/test_host_syncs.py)


def _images(b: int) -> torch.Tensor:
    return torch.randn(b, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _every_layer(k: int) -> str:
    return ",".join(f"{layer}:0.3" for layer in range(1, k))  # a pause stage after layers 1..K-1


def _lite_expected(k: int, pause_layers) -> int:
    return BASE + 1 + sum(1 for layer in pause_layers if layer <= k - 2)


def test_lite_reads_once_per_forward_and_once_per_pause_stage():
    model = _model("m2f_lite_tiny")
    k = model.depth
    cases = [
        (AdaptiveSettings(exits=k), ()),
        (AdaptiveSettings(exits=2, pause="1:0.3"), (1,)),
        (AdaptiveSettings(exits=k, pause=_every_layer(k)), range(1, k)),
        (AdaptiveSettings(exits=torch.tensor([2, k, 3]), pause=_every_layer(k)), range(1, k)),
        (AdaptiveSettings(exits=torch.tensor([2, k, 3, 4])), ()),
        # exits after the one pause stage: the images leaving add no read
        (AdaptiveSettings(exits=torch.tensor([2, k, 3, 4]), pause="1:0.45"), (1,)),
    ]
    for settings, pause_layers in cases:
        b = settings.exits.numel() if isinstance(settings.exits, torch.Tensor) else 3
        seen = _reads(model, _images(b), settings)
        assert len(seen) == _lite_expected(k, pause_layers), (settings, seen)
        lite = [site for _, site in seen if site.startswith("lite_encoder.py")]
        assert len(lite) == 1 + sum(1 for layer in pause_layers if layer <= k - 2), seen
        assert sum(site.startswith("run.py") for _, site in seen) == 1, seen


@pytest.mark.parametrize("settings", [
    AdaptiveSettings(exits=5),
    AdaptiveSettings(exits=3),
    AdaptiveSettings(exits=torch.tensor([3, 5, 1])),
])
def test_rt_reads_once_per_forward(settings):
    model = _model("m2f_rt_tiny")
    assert model.depth == 5
    seen = _reads(model, _images(3), settings)
    assert len(seen) == BASE + 1, seen
    assert [site for _, site in seen if site.startswith("rt_encoder.py")] and \
        sum(site.startswith("rt_encoder.py") for _, site in seen) == 1, seen


@pytest.mark.parametrize("pause", ["1:0.3", "1:0.3,2:0.3,3:0.3,4:0.3"])
def test_rt_refuses_a_pause_plan_before_any_read(pause):
    model = _model("m2f_rt_tiny")
    with torch.inference_mode(), counted_reads() as seen:
        with pytest.raises(ValueError, match="^Mask2Former cannot pause tokens: its encoder \\(rt: "):
            model(_images(3), None, AdaptiveSettings(exits=5, pause=pause))
    assert seen == []
