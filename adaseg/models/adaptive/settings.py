"""What a caller asks of an adaptive model, in one object validated where it is built."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from adaseg.models.adaptive.plan import PausePlan, normalise_exits
from adaseg.models.adaptive.pause_selection import PAUSE_MODES
from adaseg.choices import PAUSE_OUTPUTS
from adaseg.utils.arguments import ArgumentTypeError, check_bool, check_choice, describe

_EXITS = "None, an int (a layer >= 1), a per-image sequence or 1-D integer tensor of layers, or 'gate'"


def _check_exits(exits):
    """``exits`` if it is an exit plan (see :class:`AdaptiveSettings`); a list is kept as given.
    Layers beyond the depth are refused by :meth:`AdaptiveSettings.check_depth`, and those of
    a tensor (whose values are not read here: no device sync) by the forward pass."""
    if exits is None:
        return None
    if isinstance(exits, str):
        if exits != "gate":
            raise ArgumentTypeError(f"exits must be {_EXITS}, got {exits!r} (a number is given as an int)")
        return exits
    if isinstance(exits, bool):
        raise ArgumentTypeError(f"an exit is an encoder layer >= 1 (an int, not a bool), got exits={exits!r}")
    if isinstance(exits, int):
        if exits < 1:
            raise ValueError(f"an exit is an encoder layer >= 1, got exits={exits!r}")
        return exits
    if isinstance(exits, torch.Tensor):
        if exits.dtype == torch.bool or exits.is_floating_point() or exits.is_complex() or exits.dim() > 1:
            raise ArgumentTypeError(f"exits as a tensor must be a (B,) integer tensor, got {exits.dtype} "
                                    f"of shape {tuple(exits.shape)}")
        return exits
    if isinstance(exits, (bytes, bytearray)) or not isinstance(exits, Sequence):
        raise ArgumentTypeError(f"exits must be {_EXITS}, got {describe(exits)}")
    for e in exits:
        if isinstance(e, bool) or not isinstance(e, int):
            raise ArgumentTypeError(f"exits must hold one layer (an int) per image, got {describe(e)} in {exits!r}")
        if e < 1:
            raise ValueError(f"an exit is an encoder layer >= 1, got {e!r} in exits={exits!r}")
    return exits


@dataclass(frozen=True, kw_only=True)
class AdaptiveSettings:
    """The settings of one adaptive forward pass (every model in the zoo takes them).

    Args:
        exits: the exit plan: None (full depth K for every image), an int (every image),
            a (B,) tensor or sequence (one exit layer per image), or ``"gate"`` (the model's
            attached gate picks each image's exit before its encoder runs). Exits are
            encoder layers 1..K.
        pause: PAUMER's pause plan (:class:`PausePlan`, or its ``"3:0.4,5:0.3"`` spec), or None.
        pause_mode: ``"entropy"`` (pause the tokens whose auxiliary decoder is most certain)
            or ``"random"`` (PAUMER's baseline).
        generator: the RNG random pausing draws from (None: torch's global RNG); only with
            ``pause_mode="random"`` and a pause plan.
        record_exits: decode at each of these exits (increasing layers) from ONE encoder
            pass, every image running to the deepest; exclusive with ``exits``. Empty: one
            output per image at its exit.
        keep_aux: keep the auxiliary decoders' logits (with gradient) at each pause stage for
            PAUMER's auxiliary loss; None: when the model is in training mode.
        pause_output: where a paused token's label comes from: ``"decoder"`` (the patch
            assembler puts it back and the main decoder reads every token) or ``"aux"``
            (PAUMER's early exit at test time, App. I: the auxiliary decoder of the layer where
            it paused labels it, and the main decoder reads only the tokens still active).
            ``"aux"`` needs a pause plan and one exit per image (not ``record_exits``); models
            whose decoder cannot run on a subset of tokens refuse it (``model.check_early_exit()``).
        record_features: with ``record_exits``, also return the encoder's tokens after layer 2
            pooled per level (``out.layer_features``, the exit-2 gate's input; Step B records
            them). Models that cannot provide them refuse it (``model.exit2_refusal()``).

    Every field is checked here: a wrong type raises TypeError (an ``ArgumentTypeError``, also a
    ValueError), a value out of range ValueError, each naming the field. Numbers are not
    parsed from strings (``exits="3"`` is refused; the only string exit plan is ``"gate"``);
    ``pause`` accepts its spec string. The settings are keyword-only.

    Checks that need the model (layers within its depth, a gate attached) are made by
    :meth:`check_depth` when a forward pass starts.
    """

    exits: object = None
    pause: PausePlan | None = None
    pause_mode: str = "entropy"
    generator: torch.Generator | None = None
    record_exits: tuple[int, ...] = ()
    keep_aux: bool | None = None
    pause_output: str = "decoder"
    record_features: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.pause, str):
            object.__setattr__(self, "pause", PausePlan.parse(self.pause))
        if self.pause is not None and not isinstance(self.pause, PausePlan):
            raise ArgumentTypeError(f"pause must be a PausePlan, a spec like '3:0.4,5:0.3' or None, "
                                    f"got {describe(self.pause)}")
        check_choice(self.pause_mode, "pause_mode", PAUSE_MODES)
        if self.generator is not None:
            if not isinstance(self.generator, torch.Generator):
                raise ArgumentTypeError(f"generator must be a torch.Generator or None, got {describe(self.generator)}")
            if self.pause is None or self.pause_mode != "random":
                raise ValueError("a generator is only used by random pausing (pause_mode='random' with a pause plan)")
        record = self.record_exits
        if isinstance(record, (str, bytes, torch.Tensor)) or not isinstance(record, Sequence):
            raise ArgumentTypeError(f"record_exits must be a tuple of increasing layers (ints), "
                                    f"got {describe(record)}")
        record = tuple(record)
        for e in record:
            if isinstance(e, bool) or not isinstance(e, int):
                raise ArgumentTypeError(f"record_exits must hold layers (ints), got {describe(e)} "
                                        f"in {self.record_exits!r}")
        if any(e < 1 for e in record) or list(record) != sorted(set(record)):
            raise ValueError(f"record_exits must be increasing positive layers, got {self.record_exits!r}")
        object.__setattr__(self, "record_exits", record)
        if record and self.exits is not None:
            raise ValueError("exits and record_exits are exclusive: recorded exits run every image to the deepest")
        object.__setattr__(self, "exits", _check_exits(self.exits))
        check_bool(self.keep_aux, "keep_aux", optional=True)
        check_choice(self.pause_output, "pause_output", PAUSE_OUTPUTS)
        check_bool(self.record_features, "record_features")
        if self.record_features and (not record or record[-1] < 2):
            raise ValueError("record_features records the tokens after layer 2: it needs record_exits "
                             f"reaching layer 2 or later, got {list(record)}")
        if self.pause_output == "aux":
            if self.pause is None:
                raise ValueError("pause_output='aux' labels paused tokens by their auxiliary decoder: "
                                 "it needs a pause plan (e.g. pause='3:0.4')")
            if record:
                raise ValueError("pause_output='aux' decodes one exit per image: it cannot be combined "
                                 "with record_exits")

    @property
    def early_exit(self) -> bool:
        """True when paused tokens are labelled by their auxiliary decoder (``pause_output="aux"``)."""
        return self.pause_output == "aux"

    @property
    def uses_gate(self) -> bool:
        return isinstance(self.exits, str)

    def check_depth(self, depth: int) -> None:
        """Raise ValueError unless every layer named fits a ``depth``-layer encoder."""
        if self.pause is not None:
            self.pause.check_depth(depth)
        if self.record_exits and self.record_exits[-1] > depth:
            raise ValueError(f"record_exits must be in 1..{depth}, got {list(self.record_exits)}")
        if isinstance(self.exits, int) and self.exits > depth:
            raise ValueError(f"exits must be in 1..{depth}, got {self.exits}")

    def exit_plan(self, *, batch_size: int, depth: int, gate=None, gate_features: torch.Tensor | None = None,
                  device=None) -> torch.Tensor | None:
        """(B,) int64 exit per image in 1..depth, or None when ``record_exits`` is set.

        ``gate``/``gate_features`` (B, C): the model's attached gate and its input, used by
        ``exits="gate"``.
        """
        if self.record_exits:
            return None
        exits = self.exits
        if self.uses_gate:
            if gate is None:
                raise ValueError("exits='gate' needs a gate: call model.set_gate(gate) first")
            exits = gate.predict(gate_features)
        return normalise_exits(exits, batch_size, depth, device=device)
