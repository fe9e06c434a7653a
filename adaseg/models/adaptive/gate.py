"""ECO-M2F's gating network: pooled lowest-resolution tokens -> one logit per exit.

The gate reads ``out.gate_features`` (B, C), computed before the encoder runs, so Step C
trains on cached features and inference picks each image's exit before spending encoder
compute on it. Every image is gated independently (any batch size).

A gate with ``features="exit2"`` (``fit-gate --features exit2``, beyond the paper) reads
instead the encoder's tokens after layer 2 pooled per level (B, L * C)
(:func:`adaseg.models.adaptive.deferred.pool_levels`): the model decides each image's exit
inside its encoder loop, after layer 2, which every image runs anyway
(:class:`~adaseg.models.adaptive.deferred.DeferredPlan`).
"""

from __future__ import annotations

import torch
from torch import nn

from adaseg.models.adaptive.deferred import EXIT2_LAYER, GATE_FEATURES


def pool_features(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Adaptive average pool over the valid tokens of a map.

    Args:
        x: (B, C, h, w) tokens (the lowest-resolution level after input projection).
        mask: (B, h, w) bool, True on padding, or None.

    Returns:
        (B, C) mean over the positions that are not padding.
    """
    if mask is None:
        return x.mean((2, 3))
    valid = (~mask).to(x.dtype)[:, None]
    return (x * valid).sum((2, 3)) / valid.sum((2, 3)).clamp(min=1)


class Gate(nn.Module):
    """One linear layer from pooled features to K exit logits.

    Args:
        in_channels: C of the pooled features.
        exits: the exit (encoder layer, 1-based) each logit stands for, increasing, e.g.
            (2, 3, 4, 5, 6).
        features: what it reads: ``"backbone"`` (the paper's pooled lowest-resolution tokens,
            before layer 1) or ``"exit2"`` (the tokens after layer 2 pooled per level; its
            exits must then all be >= 2).
    """

    def __init__(self, *, in_channels: int, exits: tuple[int, ...], features: str = "backbone"):
        super().__init__()
        exits = tuple(int(e) for e in exits)
        if not exits or any(b <= a for a, b in zip(exits, exits[1:])) or exits[0] < 1:
            raise ValueError(f"gate exits must be positive and strictly increasing, got {exits}")
        if features not in GATE_FEATURES:
            raise ValueError(f"gate features must be one of {', '.join(GATE_FEATURES)}, got {features!r}")
        if features == "exit2" and exits[0] < EXIT2_LAYER:
            raise ValueError(f"a gate deciding after layer {EXIT2_LAYER} cannot pick exit {exits[0]} "
                             f"(exits {exits})")
        self.in_channels = in_channels
        self.exits = exits
        self.features = features
        self.linear = nn.Linear(in_channels, len(exits))

    @property
    def decide_after(self) -> int:
        """The encoder layers run before the gate decides: 0 (backbone) or 2 (exit2)."""
        return EXIT2_LAYER if self.features == "exit2" else 0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C) pooled features -> (B, K) logits."""
        if features.dim() != 2 or features.shape[1] != self.in_channels:
            raise ValueError(f"gate expects (B, {self.in_channels}) features, got {tuple(features.shape)}")
        return self.linear(features)

    @torch.no_grad()
    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C) -> (B,) int64 exit layer per image (the exit with the highest logit)."""
        index = self.forward(features).argmax(-1)
        return torch.as_tensor(self.exits, device=features.device)[index]


def check_gate_fits(gate: Gate, *, depth: int, channels: int) -> None:
    """Raise ValueError unless ``gate`` fits a model: its exits are layers of the model's
    ``depth``-layer encoder and it reads ``channels``-wide gate features."""
    if max(gate.exits) > depth or gate.in_channels != channels:
        raise ValueError(
            f"gate (exits {gate.exits}, {gate.in_channels} channels) does not fit this model "
            f"(depth {depth}, {channels} channels)"
        )
