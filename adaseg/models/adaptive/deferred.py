"""A deferred exit plan: each image's exit decided inside the encoder loop, after layer ``after``.

Every image runs at least 2 encoder layers (the shallowest exit of every parent is 2), so a
decision taken after layer 2 costs no extra layer and can read what layer 2 computed: the
exit-2 gate (``fit-gate --features exit2``) reads the encoder's tokens after layer 2,
averaged over the real (not padding) tokens of each level and concatenated
(:func:`pool_levels`). ECO-M2F's gate (``--features backbone``) decides before layer 1 from
the pooled backbone tokens and needs none of this.

:class:`DeferredPlan` is what :class:`~adaseg.models.adaptive.run.AdaptiveRun` takes in place
of a (B,) exit tensor: after layer ``after`` (every image still running, none has left) the run
computes ``features(map, padding)`` on the full token map and, when ``decide`` is given, each
image's exit ``decide(features)``; from then on the run is the same as one built with that
exit tensor. The decision costs one device-to-host read (the decided exits, once per forward,
at the decision point): the run needs them on the host to know which images leave after
each later layer. With ``decide=None`` the run only records the features (Step B, with
``record_exits``: ``AdaptiveSettings(record_features=True)``).

Models pass the plan through their ``encode`` to the run unchanged, so the change reaches
every model without touching its encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: the layer after which the exit-2 gate decides (every image runs at least this many layers)
EXIT2_LAYER = 2

#: the gate inputs a gate file may name (``fit-gate --features``)
GATE_FEATURES = ("backbone", "exit2")


def gate_pause_refusal(pause_layer: int, decide_after: int) -> str:
    """The one line refusing a pause after ``pause_layer`` with a gate that decides after
    layer ``decide_after > pause_layer`` (the exit-2 gate)."""
    return (f"pause layer {pause_layer} comes before the exit-2 gate's decision after layer {decide_after}: "
            "the gate was fitted on tokens that never paused (Step B does not pause), so it would read "
            f"a map it never saw; pause after layer {decide_after} or later, or use a backbone gate")


@dataclass(frozen=True)
class DeferredPlan:
    """Exits decided after layer ``after`` from the tokens it left.

    Args:
        after: the layer after which ``features`` (and ``decide``) run (1-based).
        features: ``(map (B, N, C), padding (B, N) bool | None) -> (B, F)`` per-image features
            of the full token map after layer ``after`` (paused tokens with the features they
            paused with).
        decide: ``(B, F) -> (B,)`` int64 exit per image, each in ``after..last``; None: only
            record the features (a recorded-exits run).
        last: the latest exit ``decide`` can return (the host's bound on the layers to run
            until the decision is known).
    """

    after: int
    features: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    decide: Callable[[torch.Tensor], torch.Tensor] | None
    last: int

    def __post_init__(self) -> None:
        if self.after < 1 or self.last < self.after:
            raise ValueError(f"a deferred plan decides after layer {self.after} (>= 1) and exits by layer "
                             f"{self.last} (>= {self.after})")


def pool_levels(tokens: torch.Tensor, padding: torch.Tensor | None, token_shapes: torch.Tensor) -> torch.Tensor:
    """Average the real tokens of each level and concatenate the levels.

    Args:
        tokens: (B, N, C) token map, levels concatenated in the order of ``token_shapes``
            (N = sum of h * w).
        padding: (B, N) bool True on padding tokens, or None.
        token_shapes: (L, 2) int64 (h, w) of each level.

    Returns:
        (B, L * C): level 0's mean, then level 1's, ... (a level with no real token gives 0).

    No device-to-host read: the level of each token is spread on the device with the output
    size known from ``tokens``.
    """
    b, n, c = tokens.shape
    num_levels = int(token_shapes.shape[0])
    sizes = token_shapes[:, 0] * token_shapes[:, 1]
    level = torch.repeat_interleave(torch.arange(num_levels, device=tokens.device), sizes.to(tokens.device),
                                    output_size=n)  # (N,) level of each token
    valid = torch.ones(b, n, dtype=tokens.dtype, device=tokens.device) if padding is None \
        else (~padding).to(tokens.dtype)
    sums = tokens.new_zeros(b, num_levels, c).index_add_(1, level, tokens * valid[..., None])
    counts = valid.new_zeros(b, num_levels).index_add_(1, level, valid)
    return (sums / counts.clamp(min=1)[..., None]).flatten(1)
