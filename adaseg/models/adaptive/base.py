"""The bases every adaptive model extends: :class:`AdaptiveModelBase` (the forward template,
the exits check, the gate) and :class:`AdaptiveCriterion` (the loss skeleton: ECO-M2F's
exit-weighted sum and PAUMER's auxiliary-decoder loss).

A model writes only what differs from the others::

    class MyModel(AdaptiveModelBase):
        # __init__: super().__init__(depth=K, exits=exits), then its modules
        depth, gate_channels, task, backbone      # properties (see AdaptiveModel)
        encoder_modules()                         # the FLOP scope "encoder"
        prepare(images, padding_mask) -> EncoderInput       # all before encoder layer 1
        encode(prep, *, settings, exit_plan, keep_aux) -> RunResult   # its AdaptiveRun loop
                                                  # (exit_plan passed on to the run as it is)
        exit2_channels                            # optional: F of the exit-2 gate's input
        decode(tokens, prep) -> dict              # (b, N, C) encoder tokens -> its heads
        decode_early_exit(result, prep) -> dict   # optional: PAUMER's early exit (pause_output="aux")
        postprocess(out, image_sizes, *, task, output_sizes=None) -> list
        build_criterion(*, aux_weight=0.1) -> AdaptiveCriterion

    class MyCriterion(AdaptiveCriterion):
        prepare_targets(outputs, targets)         # once per batch, shared by every exit
        head_loss(heads, prepared) -> {"total": L_k, "loss_...": ...}
        aux_labels(outputs, prepared) -> (B, H', W') labels for PAUMER's auxiliary loss

A ViT-based model takes ``prepare``/``encode`` from
:class:`~adaseg.models.backbones.vit.VisionTransformer` (one line each, see Segmenter).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from adaseg.models.adaptive.deferred import EXIT2_LAYER, DeferredPlan, gate_pause_refusal, pool_levels
from adaseg.models.adaptive.gate import Gate, check_gate_fits
from adaseg.models.adaptive.losses import aux_decoder_loss, weighted_exit_loss
from adaseg.models.adaptive.output import AdaptiveOutput
from adaseg.models.adaptive.run import RunResult
from adaseg.models.adaptive.settings import AdaptiveSettings

__all__ = ["AdaptiveCriterion", "AdaptiveModelBase", "EncoderInput", "potential_exits"]


@dataclass
class EncoderInput:
    """What a model's :meth:`~AdaptiveModelBase.prepare` computes before encoder layer 1 and
    its ``encode``/``decode`` read; a model subclasses it with its own fields.

    ``gate_features``: (B, C) the gate's input (read before any encoder layer runs);
    ``token_shapes``: (L, 2) int64 (h, w) of each level of the encoder's token map.
    """

    gate_features: torch.Tensor
    token_shapes: torch.Tensor


def potential_exits(exits: tuple[int, ...] | None, depth: int) -> tuple[int, ...]:
    """The exits a recorded-exits run decodes: ``exits`` checked (increasing layers in
    1..depth), or 2..depth when None."""
    exits = tuple(range(2, depth + 1)) if exits is None else tuple(int(e) for e in exits)
    if not exits or any(not 1 <= e <= depth for e in exits) or list(exits) != sorted(set(exits)):
        raise ValueError(f"exits must be increasing layers in 1..{depth}, got {exits}")
    return exits


class AdaptiveModelBase(nn.Module, ABC):
    """Base of every adaptive model: ``forward`` runs prepare -> exit plan (or gate) ->
    the model's adaptive encoder -> its decoder at each exit, and returns an
    :class:`AdaptiveOutput`. Subclasses provide the hooks listed in the module docstring.

    Args:
        depth: K, the encoder layers (exits are 1..K).
        exits: potential exits, the ones recipes record (default 2..K).
    """

    #: why this model has no early-exit output (``pause_output="aux"``), or None when it has
    #: one (it then overrides :meth:`decode_early_exit`).
    early_exit_refusal: str | None = ("early exit (pause_output='aux') needs a main decoder that labels "
                                      "single-scale patch tokens one by one and can run on the active ones alone")

    #: why this model cannot pause tokens (PAUMER), or None when it can: a model whose encoder
    #: would still compute every paused token (pausing would change results and save nothing)
    #: names the reason here, and every pause plan is refused (:meth:`check_pausing`).
    pause_refusal: str | None = None

    def __init__(self, *, depth: int, exits: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.exits = potential_exits(exits, depth)
        self.gate: Gate | None = None

    #: F of the exit-2 gate's input (the encoder's tokens after layer 2 pooled per level:
    #: levels x width), or None when the model does not provide it (its token map is not
    #: ``token_shapes`` levels concatenated). A model that provides it overrides this.
    exit2_channels: int | None = None

    def exit2_refusal(self) -> str | None:
        """Why this model cannot give a gate its tokens after layer 2 (one line naming the
        model), or None when it can: the model provides them (``exit2_channels``), its encoder
        has layers after layer 2 and none of its exits is before it."""
        name = type(self).__name__
        if self.exit2_channels is None:
            return f"{name} does not provide its encoder tokens after layer {EXIT2_LAYER} as pooled levels"
        if self.depth <= EXIT2_LAYER:
            return (f"{name}'s encoder has {self.depth} layers: a decision after layer {EXIT2_LAYER} "
                    "is not an early point")
        if self.exits[0] < EXIT2_LAYER:
            return f"{name} has exit {self.exits[0]}, before layer {EXIT2_LAYER} where the exit-2 gate decides"
        return None

    def check_early_exit(self) -> None:
        """Raise ValueError (one line naming the model) unless this model has an early-exit
        output (``pause_output="aux"``, PAUMER App. I)."""
        if self.early_exit_refusal is not None:
            raise ValueError(f"{type(self).__name__} has no early-exit output (pause_output='aux'): "
                             f"{self.early_exit_refusal}")

    def check_pausing(self) -> None:
        """Raise ValueError (one line naming the model) unless this model can pause tokens
        (PAUMER): ``pause_refusal`` is None."""
        refusal = self.pause_refusal
        if refusal is not None:
            raise ValueError(f"{type(self).__name__} cannot pause tokens: {refusal}")

    # ------------------------------------------------------------------ what a model provides

    @property
    @abstractmethod
    def depth(self) -> int:
        """K, the number of encoder layers."""
        ...

    @property
    @abstractmethod
    def gate_channels(self) -> int:
        """C of ``gate_features``."""
        ...

    @abstractmethod
    def prepare(self, images: torch.Tensor, padding_mask: torch.Tensor | None) -> EncoderInput:
        """(B, 3, H, W) images, (B, H, W) padding or None -> everything the encoder and the
        decoder need that no encoder layer computes (backbone, embeddings, gate features)."""
        ...

    @abstractmethod
    def encode(self, prep: EncoderInput, *, settings: AdaptiveSettings, exit_plan: torch.Tensor | None,
               keep_aux: bool) -> RunResult:
        """Run the adaptive encoder (an :class:`~adaseg.models.adaptive.run.AdaptiveRun` loop).
        ``exit_plan`` is passed on to the run as it is: a (B,) tensor, None (recorded exits) or
        a :class:`~adaseg.models.adaptive.deferred.DeferredPlan` (exits decided, or features
        recorded, after layer 2 inside the loop); the run's result carries what it decided."""
        ...

    @abstractmethod
    def decode(self, tokens: torch.Tensor, prep: EncoderInput) -> dict[str, Any]:
        """(B, N, C) encoder tokens at an exit -> the model's heads (``AdaptiveOutput.heads``)."""
        ...

    def decode_early_exit(self, result: RunResult, prep: EncoderInput) -> dict[str, Any]:
        """PAUMER's early exit (``pause_output="aux"``): ``result.tokens`` (B, N, C) as the
        encoder left them (paused tokens with the features they paused with), ``result.paused``
        the pause records -> the model's heads, paused tokens labelled by the auxiliary decoder
        of their pause layer. Only models with ``early_exit_refusal = None`` provide it."""
        self.check_early_exit()
        raise ValueError(f"{type(self).__name__} declares an early-exit output but does not decode one")

    # ------------------------------------------------------------------ the template

    def set_gate(self, gate: Gate | None) -> None:
        """Attach a trained gate (used by ``exits="gate"``), or detach with None; a gate that
        does not fit raises ValueError (an exit-2 gate on a model that cannot provide its
        features: :meth:`exit2_refusal`)."""
        if gate is not None:
            channels = self.gate_channels
            if getattr(gate, "features", "backbone") == "exit2":
                refusal = self.exit2_refusal()
                if refusal is not None:
                    raise ValueError(f"an exit-2 gate does not fit this model: {refusal}")
                channels = self.exit2_channels
            check_gate_fits(gate, depth=self.depth, channels=channels)
        self.gate = gate

    def forward(self, images: torch.Tensor, padding_mask: torch.Tensor | None = None,
                settings: AdaptiveSettings | None = None) -> AdaptiveOutput:
        """
        Args:
            images: (B, 3, H, W) normalised images.
            padding_mask: (B, H, W) bool True on padding, or None.
            settings: exit plan / gate, pause plan, recorded exits (None: full depth, no pausing);
                anything else (e.g. an int exit) raises TypeError naming ``settings``.

        Returns:
            :class:`AdaptiveOutput` whose heads are the model's :meth:`decode` outputs.
        """
        settings = AdaptiveSettings() if settings is None else settings
        if not isinstance(settings, AdaptiveSettings):
            raise TypeError(f"settings must be an adaseg.AdaptiveSettings or None, got {type(settings).__name__} "
                            "(e.g. AdaptiveSettings(exits=3) for a fixed exit)")
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a (B, 3, H, W) torch.Tensor, got {type(images).__name__}")
        if padding_mask is not None and not isinstance(padding_mask, torch.Tensor):
            raise TypeError(f"padding_mask must be a (B, H, W) bool torch.Tensor or None, "
                            f"got {type(padding_mask).__name__}")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        b, _, h, w = images.shape
        if padding_mask is not None and tuple(padding_mask.shape) != (b, h, w):
            raise ValueError(f"padding_mask must be {(b, h, w)}, got {tuple(padding_mask.shape)}")
        settings.check_depth(self.depth)
        if settings.pause is not None:
            self.check_pausing()
            self.check_gate_pause(settings)
        if settings.early_exit:
            self.check_early_exit()
        if settings.record_features:
            refusal = self.exit2_refusal()
            if refusal is not None:
                raise ValueError(f"record_features: {refusal}")
        prep = self.prepare(images, padding_mask)
        deferred = self._deferred_plan(settings, prep)
        plan = None if deferred is not None else settings.exit_plan(
            batch_size=b, depth=self.depth, gate=self.gate, gate_features=prep.gate_features, device=images.device)
        keep_aux = self.training if settings.keep_aux is None else settings.keep_aux
        enc = self.encode(prep, settings=settings, exit_plan=deferred if deferred is not None else plan,
                          keep_aux=keep_aux)
        if deferred is not None and deferred.decide is not None:
            plan = enc.exit_plan
        if enc.tokens is None:
            heads = None
        else:
            heads = self.decode_early_exit(enc, prep) if settings.early_exit else self.decode(enc.tokens, prep)
        return AdaptiveOutput(
            heads=heads,
            exits={k: self.decode(t, prep) for k, t in enc.per_exit.items()},
            exit_plan=plan, gate_features=prep.gate_features, aux_logits=enc.aux, paused=enc.paused,
            token_shapes=prep.token_shapes, input_size=(h, w), padding_mask=padding_mask,
            early_exit=settings.early_exit, layer_features=enc.features,
        )

    def check_gate_pause(self, settings: AdaptiveSettings) -> None:
        """Raise ValueError (one line) for a gate deciding inside the encoder (the exit-2 gate)
        with a pause stage before its decision: Step B recorded its features without pausing,
        so a token paused after layer 1 would hand the gate a map it never saw in fitting
        (a pause after layer 2 or later leaves the features it reads unchanged)."""
        gate = self.gate
        if not settings.uses_gate or gate is None or settings.pause is None or gate.decide_after == 0:
            return
        early = [layer for layer, _ in settings.pause.stages if layer < gate.decide_after]
        if early:
            raise ValueError(gate_pause_refusal(early[0], gate.decide_after))

    def _deferred_plan(self, settings: AdaptiveSettings, prep: EncoderInput) -> DeferredPlan | None:
        """The plan decided (exit-2 gate) or features recorded (``record_features``) after
        layer 2 inside the encoder loop, or None: the plan is known before layer 1."""
        def features(tokens, padding):
            return pool_levels(tokens, padding, prep.token_shapes)

        if settings.record_features:
            return DeferredPlan(after=EXIT2_LAYER, features=features, decide=None, last=self.depth)
        gate = self.gate
        if settings.uses_gate and gate is not None and gate.features == "exit2":
            return DeferredPlan(after=EXIT2_LAYER, features=features, decide=gate.predict, last=max(gate.exits))
        return None


class AdaptiveCriterion(nn.Module, ABC):
    """Base of every model's loss: ``loss = sum_k alpha_k L_k`` over recorded exits (or the
    single exit's L), plus ``aux_weight`` x PAUMER's auxiliary-decoder cross-entropy.

    Args:
        aux_weight: PAUMER's lambda (0.1).
    """

    def __init__(self, *, aux_weight: float = 0.1) -> None:
        super().__init__()
        self.aux_weight = aux_weight

    @abstractmethod
    def prepare_targets(self, outputs: AdaptiveOutput, targets: list[dict]) -> Any:
        """Check and pad the targets once per batch; the result goes to the other hooks."""
        ...

    @abstractmethod
    def head_loss(self, heads: dict[str, Any], prepared: Any) -> dict[str, torch.Tensor]:
        """One exit's heads -> scalar loss parts (``loss_*``) and ``total`` (L_k)."""
        ...

    @abstractmethod
    def aux_labels(self, outputs: AdaptiveOutput, prepared: Any) -> torch.Tensor:
        """(B, H', W') int64 labels (255 ignored) whose cell at each token's centre is that
        token's target (see :func:`~adaseg.models.adaptive.losses.token_labels`)."""
        ...

    def forward(self, outputs: AdaptiveOutput, targets: list[dict], *,
                exit_weights: dict[int, float] | None = None) -> dict:
        """
        Args:
            outputs: a model output (single exit, or recorded ``exits``).
            targets: per-image target dicts (what the model's criterion reads).
            exit_weights: {exit: alpha_k}, required with recorded-exits outputs (ECO-M2F's
                weighted stochastic depth: loss = sum_k alpha_k L_k).

        Returns:
            dict of scalar tensors: ``loss`` (the total to minimise), ``loss_exit{k}`` per exit,
            the parts of :meth:`head_loss` (of the deepest exit when several) and
            ``loss_aux_decoder`` (unweighted).
        """
        prepared = self.prepare_targets(outputs, targets)
        result: dict[str, torch.Tensor] = {}
        if outputs.exits:
            losses = weighted_exit_loss(outputs.exits, exit_weights, lambda heads: self.head_loss(heads, prepared))
            total, parts = losses.total, losses.deepest
            result.update(losses.per_exit)
        else:
            parts = self.head_loss(outputs.single_heads(), prepared)
            total = parts["total"]
        result.update({n: v for n, v in parts.items() if n != "total"})
        if outputs.aux_logits:
            aux = aux_decoder_loss(outputs.aux_logits, self.aux_labels(outputs, prepared), outputs.token_shapes)
        else:
            aux = torch.zeros((), dtype=torch.float32, device=outputs.gate_features.device)
        result["loss_aux_decoder"] = aux
        result["loss"] = total + self.aux_weight * aux
        return result
