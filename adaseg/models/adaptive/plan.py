"""The adaptive-encoder contract shared by every model in the zoo.

An adaptive encoder takes

* an **exit plan**: for each image, the encoder layer (1..K) after which it leaves the
  encoder. ``None`` means full depth (K) for every image; an ``int`` applies to every image;
  a (B,) int64 tensor gives one exit per image; ``"gate"`` lets the model's attached gate
  pick each image's exit. Images leave the active set as they exit, so a batch costs what
  its images cost.
* a **pause plan** (:class:`PausePlan`): after layer ``l``, pause ``ratio`` of the tokens
  still active (those whose auxiliary-decoder entropy is lowest, or random ones for
  PAUMER's baseline). Paused tokens keep their features and are never updated again; an
  assembler puts every token back in place before the decoder.

The pieces, one module each:

* :class:`~adaseg.models.adaptive.settings.AdaptiveSettings`: what the caller asks (exit
  plan or gate, pause plan, pause mode and generator, recorded exits, auxiliary logits);
* :class:`~adaseg.models.adaptive.output.AdaptiveOutput`: what every model returns;
* :class:`~adaseg.models.adaptive.protocol.AdaptiveModel`: the model contract the recipes use
  (``model(images, padding_mask, settings)``, ``depth``, ``exits``, ``gate_channels``,
  ``set_gate``, ``task``, ``encoder_modules()``, ``backbone``);
* :class:`~adaseg.models.adaptive.run.AdaptiveRun`: the loop every encoder runs (which
  images and tokens are still running, one token buffer, exits and pauses recorded);
* :class:`~adaseg.models.adaptive.base.AdaptiveModelBase` and
  :class:`~adaseg.models.adaptive.base.AdaptiveCriterion`: the bases every model and its loss
  extend (the forward template, the exits check, the gate; the exit-weighted and auxiliary
  losses), so a model writes only its encoder layers, its heads and its postprocess.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PausePlan:
    """``layer -> ratio`` pairs: after encoder layer ``layer`` (1-based), pause ``ratio`` of the
    tokens still active. Layers strictly increase; each ratio is in (0, 1).

    ``stages``: a non-empty tuple (or list) of ``(layer, ratio)`` pairs; ``layer`` an int
    (never a bool or a string), ``ratio`` a number (never a bool, a string or NaN). Stored as
    a tuple of ``(int, float)``. A wrong type raises TypeError, a value out of range
    ValueError, both naming the stage. For text, use :meth:`parse` (``"3:0.4,5:0.3"``).
    """

    stages: tuple[tuple[int, float], ...]

    def __post_init__(self) -> None:
        from adaseg.utils.arguments import ArgumentTypeError, describe

        if isinstance(self.stages, (str, bytes)) or not isinstance(self.stages, (tuple, list)):
            hint = " (use PausePlan.parse for a spec like '3:0.4,5:0.3')" if isinstance(self.stages, str) else ""
            raise ArgumentTypeError(f"PausePlan stages must be a tuple of (layer, ratio) pairs{hint}, "
                                    f"got {describe(self.stages)}")
        if not self.stages:
            raise ValueError("PausePlan stages is empty: give (layer, ratio) pairs, or use no plan (None) "
                             "for no pausing")
        stages = []
        last = 0
        for i, stage in enumerate(self.stages):
            if isinstance(stage, (str, bytes)) or not isinstance(stage, (tuple, list)) or len(stage) != 2:
                raise ArgumentTypeError(f"PausePlan stages[{i}] must be a (layer, ratio) pair, got {describe(stage)}")
            layer, ratio = stage
            if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
                raise ArgumentTypeError(f"pause layer must be a positive integer, got {describe(layer)} "
                                        f"in stages[{i}]")
            if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
                raise ArgumentTypeError(f"pause ratio must be a number in (0, 1), got {describe(ratio)} "
                                        f"at layer {layer}")
            layer = int(layer)
            if layer < 1:
                raise ValueError(f"pause layer must be a positive integer, got {layer!r}")
            if layer <= last:
                raise ValueError(f"pause layers must strictly increase, got {layer} after {last}")
            if math.isnan(ratio) or not (0.0 < ratio < 1.0):
                raise ValueError(f"pause ratio must be in (0, 1), got {ratio!r} at layer {layer}")
            stages.append((layer, float(ratio)))
            last = layer
        object.__setattr__(self, "stages", tuple(stages))

    @classmethod
    def parse(cls, spec: str | None) -> "PausePlan | None":
        """Parse ``"3:0.4,5:0.3"``; ``None`` and ``"none"`` mean no pausing. An empty spec is
        an error (``--pause ''`` is more likely a lost variable than a request not to pause).
        A ``spec`` that is neither a string nor None raises TypeError."""
        if spec is not None and not isinstance(spec, str):
            from adaseg.utils.arguments import ArgumentTypeError, describe

            raise ArgumentTypeError(f"a pause spec must be a string like '3:0.4,5:0.3' or None, got {describe(spec)}")
        if spec is None or spec.strip().lower() == "none":
            return None
        if not spec.strip():
            raise ValueError("the pause spec is empty: give layer:ratio pairs (e.g. 3:0.4,5:0.3) or none")
        stages = []
        for part in spec.split(","):
            layer_text, sep, ratio_text = part.strip().partition(":")
            if not sep:
                raise ValueError(f"pause stage {part.strip()!r} is not layer:ratio (e.g. 3:0.4)")
            try:
                layer, ratio = int(layer_text), float(ratio_text)
            except ValueError:
                raise ValueError(f"pause stage {part.strip()!r} is not layer:ratio (e.g. 3:0.4)") from None
            stages.append((layer, ratio))
        return cls(tuple(stages))

    def check_depth(self, depth: int) -> None:
        """Raise if a stage pauses after a layer the encoder does not have (or after its last)."""
        for layer, _ in self.stages:
            if layer >= depth:
                raise ValueError(
                    f"pause layer {layer} must be below the encoder depth {depth} "
                    "(pausing after the last layer changes nothing)"
                )

    def ratio_after(self, layer: int) -> float | None:
        """The ratio paused after ``layer``, or None."""
        for stage_layer, ratio in self.stages:
            if stage_layer == layer:
                return ratio
        return None

    def __str__(self) -> str:
        # exact: parse(str(plan)) == plan (a ratio 0.9999999 must not be written as 1)
        from adaseg.exact import exact_float

        return ",".join(f"{layer}:{exact_float(ratio)}" for layer, ratio in self.stages)


def normalise_exits(exits, batch_size: int, depth: int, device=None) -> torch.Tensor:
    """Turn an exit plan (None | int | (B,) tensor/sequence) into a (B,) int64 tensor in 1..depth."""
    if exits is None:
        plan = torch.full((batch_size,), depth, dtype=torch.long, device=device)
    elif isinstance(exits, int):
        plan = torch.full((batch_size,), exits, dtype=torch.long, device=device)
    else:
        plan = torch.as_tensor(exits, dtype=torch.long, device=device).reshape(-1)
        if plan.numel() != batch_size:
            raise ValueError(f"exit plan has {plan.numel()} entries for a batch of {batch_size}")
    if plan.numel() and (int(plan.min()) < 1 or int(plan.max()) > depth):
        raise ValueError(f"exits must be in 1..{depth}, got {plan.tolist()}")
    return plan
