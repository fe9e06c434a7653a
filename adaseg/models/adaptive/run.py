"""The adaptive run: one forward pass of an adaptive encoder, the project's idea as one object.

It owns which images are still running and their exits, which tokens are active and where
they sit in the original token map, the ONE full-size token buffer (a
:class:`~adaseg.ops.pausing.PatchAssembler`), and what is recorded on the way (each image's
tokens at its exit, the tokens at recorded exits, pause records, auxiliary-decoder logits).
An encoder is a loop over its layers that asks the run for the active tokens, calls the
layer and hands the result back; the run exits images and pauses tokens::

    run = AdaptiveRun(tokens, settings=settings, exit_plan=plan, aux_decoders=self.aux_decoders,
                      padding=padding, keep_aux=False, paused_are_values=False)   # tokens: (B, N, C)
    run.track(pos=pos)                                 # per-token inputs, (B, N, ...)
    for layer_no in run.layers():
        y = layers[layer_no - 1](run.tokens, run.tracked("pos"), ...)   # (b, n, C)
        run.step(y)
    result = run.finish()                              # RunResult

Semantics (the contract of every adaptive encoder):

* after layer l the images whose exit is l leave: their full token map (paused tokens with
  the features they paused with, active ones as layer l left them) is their output, and
  later layers run on the other images only, so a batch costs what its images cost;
* then, if images are still running and the pause plan names l, the ``ratio`` of each
  image's active tokens with the lowest auxiliary-decoder entropy (or random ones) pause:
  they are no longer updated; padding tokens pause first;
* with ``record_exits`` every image runs to the deepest recorded exit and the full map is
  recorded after each recorded layer;
* with a ``tail`` (a layer every image runs after its exit: Lite-ECO-M2F keeps Lite-M2F's
  all-scale last layer K, ECO-M2F App.), an image leaving after a layer l < ``tail_layer``,
  or a map recorded there, first goes through the tail: it updates the image's active tokens
  (paused ones stay as they paused), reading the image's full map; after layer
  ``tail_layer`` itself the loop ran that layer, so nothing more is applied.

No device-to-host syncs in the loop: the exit plan is read to the host once, when the run is
built (one ``tolist``; a :class:`~adaseg.models.adaptive.deferred.DeferredPlan` once, when it
decides after its layer, every image still running), and which images leave after a layer, and whether all of them do, is
decided from those host values; the rows that stay and leave are taken on the device
(a stable sort of "leaves?" flags whose counts the host knows), so on a GPU the host queues
layer after layer without waiting for the device (tests/models/test_host_syncs.py).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from adaseg.models.adaptive.deferred import DeferredPlan
from adaseg.models.adaptive.output import PauseRecord
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.adaptive.pause_selection import AuxRecord, select_pause, select_pause_lean
from adaseg.ops import pausing


# id(exit plan) -> (weak reference to it, its values): plans whose values the host knows
# (:func:`with_host_values`). Keyed by id, not by the tensor: a tensor's == is elementwise.
_host_plans: dict[int, tuple[weakref.ref, list[int]]] = {}


def with_host_values(exit_plan: torch.Tensor, values: Sequence[int]) -> torch.Tensor:
    """Tell every :class:`AdaptiveRun` built with ``exit_plan`` (B,) its values, so it need not
    read them from the device: a run with a plan known on the host (a fixed exit, the groups
    of a CUDA graph, where a read is not allowed) makes no device-to-host read at all.
    ``values`` must be ``exit_plan``'s values; returns ``exit_plan``."""
    values = [int(v) for v in values]
    if len(values) != exit_plan.shape[0]:
        raise ValueError(f"{len(values)} host values for an exit plan of {exit_plan.shape[0]} images")
    key = id(exit_plan)
    _host_plans[key] = (weakref.ref(exit_plan, lambda _, key=key: _host_plans.pop(key, None)), values)
    return exit_plan


def _host_values(exit_plan: torch.Tensor) -> list[int] | None:
    entry = _host_plans.get(id(exit_plan))
    return None if entry is None or entry[0]() is not exit_plan else list(entry[1])


@dataclass
class TailInput:
    """What a run's ``tail`` reads for the b' images it finishes (leaving or recorded): their
    ``tokens`` (b', n, C) active tokens, ``tracked`` {name: (b', n, ...)} per-token inputs at
    them, ``full`` (b', N, C) their full maps (paused tokens included), ``padding`` (b', N)
    bool or None. The tail returns the active tokens updated, (b', n, C)."""

    tokens: torch.Tensor
    tracked: dict[str, torch.Tensor | None]
    full: torch.Tensor
    padding: torch.Tensor | None


@dataclass
class RunResult:
    """``tokens``: (B, N, C) each image's full token map at its exit (None when exits were
    recorded); ``per_exit``: {k: (B, N, C)} at each recorded exit (after the run's tail where
    one applies); ``before_tail``: {k: (B, N, C)} the recorded maps where a tail applied, as
    layer k left them (what a token paused after layer k keeps); ``aux``: auxiliary-decoder
    records (``keep_aux``); ``paused``: one record per pause stage. With a
    :class:`~adaseg.models.adaptive.deferred.DeferredPlan`: ``features`` (B, F) what its
    ``features`` computed after its layer, and ``exit_plan`` (B,) the exits it decided (None
    when it only recorded features)."""

    tokens: torch.Tensor | None
    per_exit: dict[int, torch.Tensor] = field(default_factory=dict)
    before_tail: dict[int, torch.Tensor] = field(default_factory=dict)
    aux: list[AuxRecord] = field(default_factory=list)
    paused: list[PauseRecord] = field(default_factory=list)
    features: torch.Tensor | None = None
    exit_plan: torch.Tensor | None = None


class AdaptiveRun:
    """One adaptive forward pass over an encoder of K layers; see the module docstring.

    Args:
        tokens: (B, N, C) the token map before layer 1.
        settings: the caller's :class:`AdaptiveSettings` (pause plan, mode, generator,
            recorded exits, ``keep_aux`` resolved to a bool).
        exit_plan: (B,) int64 exit per image in 1..K, or None with ``record_exits``; or a
            :class:`~adaseg.models.adaptive.deferred.DeferredPlan`: exits decided after its
            layer (its ``decide`` given, no ``record_exits``), or features recorded after it
            (``decide`` None, with ``record_exits``).
        aux_decoders: ``aux_decoders[l - 1]`` scores the tokens after layer l (l < K).
        padding: (B, N) bool True on padding tokens, or None.
        keep_aux: keep auxiliary-decoder logits (with gradient) at pause stages.
        paused_are_values: the encoder's layers read paused tokens (deformable attention
            values: :meth:`full_map` every layer) rather than leaving them out (ViT).
        on_record: applied to each recorded map (b, N, C) when it is recorded (e.g. the
            encoder's final norm), or None.
        tail: ``TailInput -> (b', n, C)``, a layer each image runs after an exit (or recorded
            exit) before ``tail_layer``; None: none (every encoder but Lite's).
        tail_layer: the encoder layer the tail is (its loop runs it as layer ``tail_layer``).
    """

    def __init__(self, tokens: torch.Tensor, *, settings: AdaptiveSettings,
                 exit_plan: torch.Tensor | DeferredPlan | None,
                 aux_decoders: nn.ModuleList, padding: torch.Tensor | None, keep_aux: bool,
                 paused_are_values: bool, on_record: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 tail: Callable[[TailInput], torch.Tensor] | None = None, tail_layer: int | None = None):
        if (tail is None) != (tail_layer is None):
            raise ValueError("a run's tail needs its layer number (tail_layer), and tail_layer a tail")
        self._tail, self._tail_layer = tail, tail_layer
        deferred = exit_plan if isinstance(exit_plan, DeferredPlan) else None
        if deferred is not None:
            if (deferred.decide is None) != bool(settings.record_exits):
                raise ValueError("a deferred plan decides exits (no recorded exits) or records features "
                                 "(decide=None, with recorded exits)")
            if settings.record_exits and settings.record_exits[-1] < deferred.after:
                raise ValueError(f"features after layer {deferred.after} need a recorded exit at or after it, "
                                 f"got {list(settings.record_exits)}")
            exit_plan = None
        elif (exit_plan is None) == (not settings.record_exits):
            raise ValueError("an adaptive run needs either an exit plan or recorded exits")
        self._deferred = deferred
        self.settings = settings
        self.keep_aux = keep_aux
        self._on_record = on_record
        self._aux_decoders = aux_decoders
        b = tokens.shape[0]
        self.rows = torch.arange(b, device=tokens.device)  # (b,) batch index of each running image
        self._exits = exit_plan  # (b,) exit of each running image (on the device)
        # The plan's one read to the host per forward: every later decision uses these values.
        known = None if exit_plan is None else _host_values(exit_plan)
        self._exit_list: list[int] = [] if exit_plan is None else known if known is not None else exit_plan.tolist()
        if settings.record_exits:
            self.last = settings.record_exits[-1]
        else:  # a deferred plan: run up to its bound until it has decided
            self.last = deferred.last if deferred is not None and deferred.decide is not None else max(self._exit_list)
        self._asm = pausing.PatchAssembler(tokens, values=paused_are_values)
        self._batch = b
        self.padding = padding  # (b, N) of the running images
        self._sources: dict[str, torch.Tensor | None] = {}  # (b, N, ...) per-token inputs of the running images
        self._views: dict[str, torch.Tensor | None] = {}  # (b, n, ...) the same at the active tokens
        self.carry: dict[str, torch.Tensor | None] = {}  # (b, ...) per-image state the encoder keeps
        self._out: torch.Tensor | None = None
        self._result = RunResult(tokens=None)
        self.layer = 0
        self._stepped = True

    # ------------------------------------------------------------------ what the encoder reads

    @property
    def tokens(self) -> torch.Tensor:
        """(b, n, C) the active tokens of the running images."""
        return self._asm.active

    @property
    def positions(self) -> torch.Tensor | None:
        """(b, n) int64 row of each active token in the full map, or None: all, in order."""
        return self._asm.positions

    def full_map(self) -> torch.Tensor:
        """(b, N, C) every token of the running images in place (paused and active), e.g. the
        values of deformable attention. The run's one buffer, written in place: read it
        before :meth:`step`, do not keep it."""
        return self._asm.full()

    def track(self, **sources: torch.Tensor | None) -> None:
        """Register per-token inputs (B, N, ...) (or None); :meth:`tracked` gives them at the
        active tokens of the running images, gathered once per pause stage, not per layer."""
        for name, src in sources.items():
            self._sources[name] = src
            self._views[name] = src

    def tracked(self, name: str) -> torch.Tensor | None:
        """(b, n, ...) the per-token input ``name`` at the active tokens."""
        return self._views[name]

    @property
    def active_padding(self) -> torch.Tensor | None:
        """(b, n) bool True where an active token is padding, or None."""
        return self._views.get("__padding")

    # ------------------------------------------------------------------ the loop

    def layers(self) -> Iterator[int]:
        """Layer numbers 1..last; the body must call :meth:`step` once per layer."""
        self._sources["__padding"] = self._views["__padding"] = self.padding
        layer_no = 0
        while layer_no < self.last:  # (a deferred plan may lower self.last when it decides)
            layer_no += 1
            self.layer, self._stepped = layer_no, False
            yield layer_no
            if not self._stepped:
                raise RuntimeError(f"adaptive run: the encoder did not call step() after layer {layer_no}")
            if self.rows.shape[0] == 0:
                return

    def step(self, tokens: torch.Tensor) -> None:
        """The active tokens (b, n, C) after the current layer: exit, record, pause."""
        if self._stepped:
            raise RuntimeError("adaptive run: step() called twice for one layer")
        self._stepped = True
        self._asm.update(tokens)
        layer_no = self.layer
        if self._deferred is not None and layer_no == self._deferred.after:
            self._decide()
        if self.settings.record_exits:
            if layer_no in self.settings.record_exits:
                if self._tails(layer_no):
                    self._result.before_tail[layer_no] = self._asm.full().clone()
                    recorded = self._through_tail(None)
                else:
                    recorded = self._asm.share()
                self._result.per_exit[layer_no] = recorded if self._on_record is None else self._on_record(recorded)
        elif layer_no in self._exit_list:
            self._exit(layer_no)
        ratio = None if self.settings.pause is None else self.settings.pause.ratio_after(layer_no)
        if ratio is not None and layer_no < self.last and self.rows.shape[0]:
            self._pause(layer_no, ratio)

    def finish(self) -> RunResult:
        """What was recorded; call after the loop."""
        if self.layer != self.last:
            raise RuntimeError(f"adaptive run: finished after layer {self.layer} of {self.last}")
        self._result.tokens = self._out
        return self._result

    # ------------------------------------------------------------------ internals

    def _decide(self) -> None:
        """The deferred plan's features of the full map (every image still running: none can
        have left before the decision) and, with ``decide``, the exits: read to the host here,
        the deferred run's one device-to-host read."""
        plan = self._deferred
        full = self._asm.full()
        if self._on_record is not None:
            full = self._on_record(full)
        features = plan.features(full, self.padding)
        self._result.features = features
        if plan.decide is None:
            return
        exits = plan.decide(features).to(device=self.rows.device, dtype=torch.long)
        values = exits.tolist()
        if len(values) != self._batch or (values and not plan.after <= min(values) <= max(values) <= plan.last):
            raise ValueError(f"a deferred plan must give {self._batch} exits in {plan.after}..{plan.last}, "
                             f"got {values}")
        self._exits, self._exit_list = exits, values
        self._result.exit_plan = exits
        self.last = max(values) if values else plan.after

    def _exit(self, layer_no: int) -> None:
        """The running images whose exit is ``layer_no`` leave (decided on the host)."""
        n_leave = self._exit_list.count(layer_no)
        n_stay = len(self._exit_list) - n_leave
        tail = self._tails(layer_no)
        if n_stay == 0 and self._out is None:  # the whole batch leaves at once: no copy
            self._out = self._asm.share() if not tail else self._through_tail(None)
        else:
            # A stable sort of the "leaves?" flags puts the staying images first and the leaving
            # ones after, each in batch order: both index sets without reading the device.
            order = torch.sort((self._exits == layer_no).to(torch.int32), stable=True).indices
            leave = order[n_stay:]
            out = self._through_tail(leave) if tail else self._asm.full().index_select(0, leave)
            if self._out is None:
                self._out = out.new_zeros((self._batch, *out.shape[1:]))
            self._out.index_copy_(0, self.rows.index_select(0, leave), out)
        self._exit_list = [e for e in self._exit_list if e != layer_no]
        if n_stay == 0:
            self.rows, self._exits = self.rows[:0], self._exits[:0]
            return
        keep = order[:n_stay]
        self.rows, self._exits = self.rows.index_select(0, keep), self._exits.index_select(0, keep)
        self._asm.drop_rows(keep)
        self._sources = {k: None if v is None else v.index_select(0, keep) for k, v in self._sources.items()}
        self._views = {k: None if v is None else v.index_select(0, keep) for k, v in self._views.items()}
        self.carry = {k: None if v is None else v.index_select(0, keep) for k, v in self.carry.items()}
        self.padding = self._sources["__padding"]

    def _tails(self, layer_no: int) -> bool:
        return self._tail is not None and layer_no < self._tail_layer

    def _through_tail(self, rows: torch.Tensor | None) -> torch.Tensor:
        """(b', N, C) the full maps of the running images ``rows`` (None: all) after the tail:
        their active tokens updated, paused ones as they are. The run's state is unchanged."""
        full, active, positions = self._asm.full(), self._asm.active, self._asm.positions
        padding, views = self.padding, self._views
        if rows is not None:
            pick = lambda t: None if t is None else t.index_select(0, rows)  # noqa: E731
            full, active, positions, padding = pick(full), pick(active), pick(positions), pick(padding)
            views = {k: pick(v) for k, v in views.items()}
        tracked = {k: v for k, v in views.items() if not k.startswith("__")}
        updated = self._tail(TailInput(tokens=active, tracked=tracked, full=full, padding=padding))
        if positions is None:  # every token active, in order: the update is the map
            return updated
        index = positions.unsqueeze(-1).expand(-1, -1, updated.shape[-1])
        return full.clone().scatter(1, index, updated)

    def _pause(self, layer_no: int, ratio: float) -> None:
        s = self.settings
        if not self.keep_aux and not torch.is_grad_enabled() and pausing.lean_enabled():
            # inference: the lean stage (adaseg.ops.pause_stage), the per-token inputs gathered
            # from their active views at the kept tokens
            sel = select_pause_lean(ratio=ratio, tokens=self._asm.active, positions=self._asm.positions,
                                    decoder=self._aux_decoders[layer_no - 1], pause_mode=s.pause_mode,
                                    padding=self._views.get("__padding"), generator=s.generator)
        else:
            sel = select_pause(layer=layer_no, ratio=ratio, tokens=self._asm.active, positions=self._asm.positions,
                               rows=self.rows, decoder=self._aux_decoders[layer_no - 1], pause_mode=s.pause_mode,
                               padding=self.padding, keep_aux=self.keep_aux, generator=s.generator)
        if sel.aux is not None:
            self._result.aux.append(sel.aux)
        self._result.paused.append(PauseRecord(layer_no, self.rows, sel.paused_at))
        self._asm.pause(kept=sel.kept, kept_at=sel.kept_at, paused_local=sel.paused_local, paused_at=sel.paused_at)
        if sel.keep_local is not None:
            self._views = {k: None if v is None else _gather_rows(v, sel.keep_local) for k, v in self._views.items()}
        else:
            self._views = {k: None if v is None else _gather(v, sel.kept_at) for k, v in self._sources.items()}


def _gather(source: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(b, N, *rest) source at (b, n) rows -> (b, n, *rest)."""
    if source.dim() == 2:
        return torch.gather(source, 1, idx)
    flat = source.flatten(2)
    return pausing.gather_tokens(flat, idx).view(*idx.shape, *source.shape[2:])


def _gather_rows(source: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(b, n, *rest) at (b, k) rows -> (b, k, *rest): one ``torch.gather``, no dispatch (inference)."""
    if source.dim() == 2:
        return torch.gather(source, 1, idx)
    flat = source.flatten(2)
    out = torch.gather(flat, 1, idx.unsqueeze(-1).expand(*idx.shape, flat.shape[2]))
    return out.view(*idx.shape, *source.shape[2:])
