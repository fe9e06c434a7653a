"""Whole models with a pause plan give the same result through both pausing backends.

The Triton backend runs on CPU under the interpreter (tests/conftest.py). Forward outputs,
the paused-token records and the parameter gradients (autograd through the Triton gather,
top-k keep and assembly) must agree with the reference backend.
"""

from __future__ import annotations

import os

import pytest
import torch

import adaseg
from adaseg.models.adaptive.plan import PausePlan
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.ops import pausing

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" or pausing.importlib.util.find_spec("triton") is None,
    reason="the Triton backend on CPU needs triton and TRITON_INTERPRET=1 (tests/conftest.py)",
)


def _run(model, images, padding_mask, plan, keys, backend, monkeypatch):
    monkeypatch.setenv(pausing.BACKEND_ENV, backend)
    model.zero_grad(set_to_none=True)
    out = model(images, padding_mask, AdaptiveSettings(pause=plan))
    # A loss over every output, so gradients reach paused and kept tokens alike.
    loss = sum(out.heads[k].float().square().mean() for k in keys)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize(
    "name,size,spec,keys",
    [
        # deformable encoder: paused tokens stay attention values
        ("m2f_tiny", 64, "1:0.4,3:0.3,4:0.5", ("pred_logits", "pred_masks")),
        # ViT: paused tokens leave attention
        ("segmenter_tiny", 64, "2:0.4,4:0.3", ("sem_logits",)),
    ],
)
def test_model_with_pause_plan_same_through_both_backends(name, size, spec, keys, monkeypatch):
    torch.manual_seed(0)
    model = adaseg.create_model(name).eval()  # eval: no dropout, deterministic
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, size, size, generator=g)
    padding_mask = torch.zeros(2, size, size, dtype=torch.bool)
    padding_mask[1, :, size - 16 :] = True  # one padded image: padded tokens pause first
    plan = PausePlan.parse(spec)

    ref_out, ref_grads = _run(model, images, padding_mask, plan, keys, "reference", monkeypatch)
    tri_out, tri_grads = _run(model, images, padding_mask, plan, keys, "triton", monkeypatch)

    # Same tokens paused at every stage (entropies differ only by float32 rounding).
    assert len(ref_out.paused) == len(plan.stages)
    for ref_rec, tri_rec in zip(ref_out.paused, tri_out.paused):
        assert ref_rec.layer == tri_rec.layer
        assert torch.equal(ref_rec.rows, tri_rec.rows) and torch.equal(ref_rec.positions, tri_rec.positions)
    for key in keys:
        torch.testing.assert_close(tri_out.heads[key], ref_out.heads[key], rtol=1e-5, atol=1e-5)
    assert ref_grads.keys() == tri_grads.keys() and ref_grads
    for n in ref_grads:
        torch.testing.assert_close(tri_grads[n], ref_grads[n], rtol=1e-4, atol=1e-6, msg=n)
