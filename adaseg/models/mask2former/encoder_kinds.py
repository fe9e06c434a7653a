"""The registry of Mask2Former encoder kinds: one name -> one adaptive encoder class.

Every kind takes the pixel decoder's prepared tokens ((B, S, C) of the three levels, lowest
resolution first, with positions, reference points and padding) and returns the run's
:class:`~adaseg.models.adaptive.run.RunResult` over the same map, so the input projection, the
FPN path to the mask features, the transformer decoder, the criterion and post-processing are
the same for all of them.

* ``deform``: Mask2Former's 6 multi-scale deformable-attention layers (ECO-M2F's parent).
* ``lite``: Lite-DETR's interleaved encoder, "(5+1)x1": layers 1-5 update the stride-32/16
  tokens, layer 6 all (:mod:`~adaseg.models.mask2former.lite_encoder`).
* ``rt``: RT-DETR's hybrid encoder, AIFI on stride 32 + CCFM convolutional fusion, as 5
  adaptive layers (:mod:`~adaseg.models.mask2former.rt_encoder`). It refuses PAUMER's pausing
  (:data:`PAUSE_REFUSALS`): every layer a paused token would skip is a dense convolution.
"""

from __future__ import annotations

from torch import nn

from adaseg.models.mask2former.encoder import AdaptiveDeformableEncoder
from adaseg.models.mask2former.lite_encoder import LiteDeformableEncoder
from adaseg.models.mask2former.rt_encoder import HybridEncoder

ENCODER_KINDS = ("deform", "lite", "rt")
DEFORMABLE_KINDS = ("deform", "lite")  # the kinds with deformable attention (enc_points applies)
# the layers each kind has in the paper configurations (rt: 2 x 3 levels - 1)
PAPER_LAYERS = {"deform": 6, "lite": 6, "rt": 5}
# why a kind cannot pause tokens (PAUMER), or None when it can (the model's ``pause_refusal``).
# rt: a pause takes effect after layer 1 at the earliest, and layer 1 is its only attention
# layer (AIFI); layers 2-5 are convolutions over whole maps, so a paused token is still computed
# (only its new value is dropped): pausing would change results and save nothing.
PAUSE_REFUSALS: dict[str, str | None] = {
    "deform": None,
    "lite": None,
    "rt": ("its encoder (rt: RT-DETR's AIFI + CCFM) runs dense convolutions over whole maps after its one "
           "attention layer (layer 1, which no pause precedes), so a paused token would save no compute, "
           "only change results"),
}


def build_encoder(kind: str, *, d_model: int, d_ffn: int, num_layers: int, n_levels: int, n_heads: int,
                  n_points: int | None, dropout: float, num_classes: int, norm_groups: int) -> nn.Module:
    """The encoder of ``kind`` (one of :data:`ENCODER_KINDS`).

    ``n_points`` is deformable attention's sampling points: required by ``deform``/``lite``,
    refused (not silently ignored) by ``rt``, which has none.
    """
    if kind not in ENCODER_KINDS:
        raise ValueError(f"unknown encoder kind {kind!r}; choose one of {', '.join(ENCODER_KINDS)}")
    common = dict(d_model=d_model, d_ffn=d_ffn, num_layers=num_layers, n_levels=n_levels, n_heads=n_heads,
                  dropout=dropout, num_classes=num_classes)
    if kind == "rt":
        if n_points is not None:
            raise ValueError(f"enc_points={n_points} is a deformable-attention setting; the rt encoder has none")
        return HybridEncoder(**common, norm_groups=norm_groups)
    if n_points is None:
        raise ValueError(f"the {kind} encoder needs enc_points (deformable attention's sampling points)")
    cls = AdaptiveDeformableEncoder if kind == "deform" else LiteDeformableEncoder
    return cls(**common, n_points=n_points)
