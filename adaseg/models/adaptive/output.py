"""What every adaptive model returns: one typed output, the same fields for every model."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from adaseg.models.adaptive.pause_selection import AuxRecord


@dataclass
class PauseRecord:
    """One pause stage: after encoder ``layer`` the images ``rows`` (b,) (batch indices of
    the images still running) paused the tokens at ``positions`` (b, m) of the full map."""

    layer: int
    rows: torch.Tensor
    positions: torch.Tensor


@dataclass
class AdaptiveOutput:
    """The output of an adaptive model's forward pass (B images of padded size (H, W)).

    Fields:
        heads: the decoder's outputs at each image's exit, a dict whose keys are the model's
            (Mask2Former: ``pred_logits`` (B, Q, K+1), ``pred_masks`` (B, Q, H/4, W/4),
            ``aux_outputs``: per decoder layer {pred_logits, pred_masks}; Segmenter:
            ``sem_logits`` (B, K_cls, H, W)); None when exits were recorded.
        exits: {k: heads at exit k} for every recorded exit (``record_exits``), from one
            encoder pass; empty otherwise.
        exit_plan: (B,) int64 exit layer per image, or None when exits were recorded.
        gate_features: (B, C) the gate's input, computed before any encoder layer runs.
        aux_logits: the auxiliary decoders' logits per pause stage (``keep_aux``), for
            PAUMER's auxiliary loss; empty when not kept.
        paused: one :class:`PauseRecord` per pause stage.
        token_shapes: (L, 2) int64 (h, w) of each token level of the encoder's map.
        input_size: (H, W) of the padded input.
        padding_mask: (B, H, W) bool True on padding, or None.
        early_exit: True when the heads label each paused token by the auxiliary decoder of
            its pause layer (``pause_output="aux"``, PAUMER App. I) instead of the main decoder.
        layer_features: (B, L * C) the encoder's tokens after layer 2 pooled per level (the
            exit-2 gate's input), when an exit-2 gate decided or ``record_features`` asked for
            them; None otherwise.
    """

    heads: dict[str, Any] | None
    exits: dict[int, dict[str, Any]]
    exit_plan: torch.Tensor | None
    gate_features: torch.Tensor
    aux_logits: list[AuxRecord] = field(default_factory=list)
    paused: list[PauseRecord] = field(default_factory=list)
    token_shapes: torch.Tensor | None = None
    input_size: tuple[int, int] = (0, 0)
    padding_mask: torch.Tensor | None = None
    early_exit: bool = False
    layer_features: torch.Tensor | None = None

    def at_exit(self, k: int) -> "AdaptiveOutput":
        """The single-exit view of a recorded-exits output at exit ``k`` (what postprocess takes)."""
        if k not in self.exits:
            raise ValueError(f"exit {k} was not recorded (recorded: {sorted(self.exits)})")
        plan = torch.full((self.gate_features.shape[0],), k, dtype=torch.long, device=self.gate_features.device)
        return replace(self, heads=self.exits[k], exits={}, exit_plan=plan)

    def single_heads(self) -> dict[str, Any]:
        """``heads``, or one clear error for a recorded-exits output."""
        if self.heads is None:
            raise ValueError("this output recorded several exits: pick one with out.at_exit(k)")
        return self.heads

    def to_float(self) -> "AdaptiveOutput":
        """Floating-point tensors of ``heads``, ``exits`` and ``gate_features`` in float32 (losses
        are computed in float32 whatever autocast produced)."""
        return replace(self, heads=_float(self.heads), exits=_float(self.exits), gate_features=_float(self.gate_features))


def _float(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, dict):
        return {k: _float(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_float(v) for v in x]
    return x
