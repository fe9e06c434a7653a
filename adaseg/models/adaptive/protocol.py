"""The adaptive model contract the recipes rely on (instead of asking which class a model is)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from adaseg.models.adaptive.output import AdaptiveOutput
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.adaptive.gate import Gate


@runtime_checkable
class AdaptiveModel(Protocol):
    """What every model in the zoo provides (Mask2Former, Segmenter, and any added later);
    :class:`~adaseg.models.adaptive.base.AdaptiveModelBase` implements the shared part.

    * ``forward(images (B, 3, H, W), padding_mask (B, H, W) bool | None, settings) ->
      AdaptiveOutput``; settings None means full depth, no pausing.
    * ``depth``: K, the encoder layers (exits are 1..K); ``exits``: the potential exits a
      recorded-exits run decodes (e.g. 2..K).
    * ``gate_channels``: C of ``gate_features``; ``set_gate(gate | None)`` attaches the gate
      ``exits="gate"`` asks (raising ValueError if it does not fit).
    * ``task``: ``"panoptic"`` (also gives semantic and instance results) or ``"semantic"``.
    * ``encoder_modules()``: the modules whose forward is "the encoder" (FLOP scope: encoder
      layers and auxiliary decoders); ``backbone``: the pretrained-backbone module (timm
      parameter names), where backbone-only checkpoints load.
    * ``postprocess(out, image_sizes, *, task, output_sizes=None)``: per-image predictions;
      ``build_criterion(aux_weight=...)``: the training loss.
    """

    depth: int
    exits: tuple[int, ...]
    gate_channels: int
    task: str
    backbone: nn.Module

    def __call__(self, images: torch.Tensor, padding_mask: torch.Tensor | None = None,
                 settings: AdaptiveSettings | None = None) -> AdaptiveOutput: ...

    def set_gate(self, gate: Gate | None) -> None: ...

    def encoder_modules(self) -> list[nn.Module]: ...

    def postprocess(self, out: AdaptiveOutput, image_sizes, *, task: str, output_sizes=None) -> list: ...

    def build_criterion(self, *, aux_weight: float = 0.1) -> nn.Module: ...
