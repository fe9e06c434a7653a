"""The adaptive encoder captured as CUDA graphs for fixed settings (issue 23).

With a pause plan every shape in the adaptive encoder is fixed by (batch, image size, exit,
plan): each stage keeps ``num_kept(n, ratio)`` tokens, a Python int. So the encoder of a
fixed-exit batch is one static sequence of kernels, which a CUDA graph replays with no host
work per kernel. :class:`GraphedModel` wraps an adaptive model for one
:class:`AdaptiveSettings`:

* a fixed exit (``exits`` None or an int): one graph per (batch, image size);
* gate exits (``exits="gate"``): the gate reads features computed before the encoder, so the
  exits are known before it runs (read to the host once per batch); the batch is split into
  buckets of one exit each and each bucket runs the graph of (its exit, its size); the tokens
  are put back in batch order before the decoder (which runs once, eagerly).

``prepare`` (backbone, embeddings) and ``decode`` run eagerly; only the encoder (the part
adaptive compute changes) is captured. Each graph is captured on first use after two eager
warm-up runs (Triton compilation, the lean stages' backend choice, the allocator's pool)
and replayed after copying the new inputs into its static inputs. Outputs are the graph's
static tensors until the next replay of the same graph; :meth:`GraphedModel.__call__` returns
heads decoded from them (new tensors) and clones what it hands out.

Not captured, refused with a ValueError naming why: padding masks (whether a batch has
padding changes the encoder's structure), random pausing (its generator), recorded exits,
auxiliary logits, per-image exit tensors (use the gate or an int), anything but CUDA.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

import torch

from adaseg.models.adaptive.output import AdaptiveOutput, PauseRecord
from adaseg.models.adaptive.run import with_host_values
from adaseg.models.adaptive.settings import AdaptiveSettings

__all__ = ["GraphedModel", "check_graphable", "graphed_for", "prep_rows", "copy_prep"]

# encoder-input fields that are not per image (never sliced by batch rows)
_SHARED_FIELDS = frozenset({"token_shapes", "spatial_shapes", "level_start_index"})


def check_graphable(settings: AdaptiveSettings, device: torch.device | str) -> None:
    """Raise ValueError (one line, naming the setting) unless the encoder can be captured."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"a CUDA graph needs a CUDA device, got {device.type} (run without the CUDA graph on CPU)")
    if settings.record_exits:
        raise ValueError("a CUDA graph is for inference at fixed settings: recorded exits are not captured")
    if settings.keep_aux:
        raise ValueError("a CUDA graph is for inference: auxiliary logits (keep_aux) are not captured")
    if settings.pause is not None and settings.pause_mode != "entropy":
        raise ValueError("a CUDA graph captures entropy pausing only (random pausing draws from a generator)")
    if getattr(settings, "pause_output", "decoder") != "decoder":
        raise ValueError("a CUDA graph captures the encoder for the main decoder's output only (pause_output)")
    if not (settings.exits is None or isinstance(settings.exits, int) or settings.uses_gate):
        raise ValueError("a CUDA graph takes a fixed exit (None or an int) or exits='gate', not per-image exits")


def _map_prep(prep: Any, fn) -> Any:
    """``prep`` (an encoder-input dataclass, nested) with ``fn(name, tensor)`` applied to every tensor."""
    def one(name: str, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return fn(name, value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return _map_prep(value, fn)
        if isinstance(value, list):
            return [one(name, v) for v in value]
        return value

    return dataclasses.replace(prep, **{f.name: one(f.name, getattr(prep, f.name)) for f in dataclasses.fields(prep)
                                        if f.init})


def prep_rows(prep: Any, rows: torch.Tensor, batch: int) -> Any:
    """The encoder input of images ``rows`` (k,) int64 of a ``batch``-image ``prep``: every
    per-image tensor (first dim ``batch``) indexed by ``rows``; level shapes shared."""
    return _map_prep(prep, lambda name, t: t if name in _SHARED_FIELDS or t.dim() == 0 or t.shape[0] != batch
                     else t.index_select(0, rows))


def copy_prep(dst: Any, src: Any) -> None:
    """Copy every tensor of encoder input ``src`` into the same tensor of ``dst`` (same layout)."""
    sources: list[torch.Tensor] = []
    _map_prep(src, lambda name, t: sources.append(t) or t)
    targets: list[torch.Tensor] = []
    _map_prep(dst, lambda name, t: targets.append(t) or t)
    if len(sources) != len(targets):
        raise ValueError("copy_prep: the encoder inputs differ in layout")
    for d, s in zip(targets, sources):
        d.copy_(s)


class _Captured:
    """The encoder of one (exit, batch, image size) as a CUDA graph over static inputs."""

    def __init__(self, model, settings: AdaptiveSettings, prep: Any, exit_layer: int):
        self.prep = _map_prep(prep, lambda name, t: t.clone())  # static inputs
        b = prep.gate_features.shape[0]
        plan = torch.full((b,), exit_layer, dtype=torch.long, device=prep.gate_features.device)
        self.plan = with_host_values(plan, [exit_layer] * b)
        encode = lambda: model.encode(self.prep, settings=settings, exit_plan=self.plan, keep_aux=False)  # noqa: E731
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # Triton compiles, lean stages are built, the allocator warms
                encode()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.result = encode()

    def run(self, prep: Any):
        copy_prep(self.prep, prep)
        self.graph.replay()
        return self.result


class GraphedModel:
    """An adaptive model whose encoder runs as CUDA graphs at fixed ``settings`` (see the
    module docstring). Call it like the model, without padding: ``out = graphed(images)``,
    under ``torch.inference_mode()``; ``out`` is the model's :class:`AdaptiveOutput`.

    Args:
        model: an adaptive model on a CUDA device, in eval mode.
        settings: the settings every call uses (checked by :func:`check_graphable`).
    """

    def __init__(self, model, settings: AdaptiveSettings):
        if not isinstance(settings, AdaptiveSettings):
            raise TypeError(f"settings must be an AdaptiveSettings, got {type(settings).__name__}")
        device = next(model.parameters()).device
        check_graphable(settings, device)
        settings.check_depth(model.depth)
        if settings.pause is not None:  # the graphs call model.encode, past forward's check
            model.check_pausing()
        if settings.uses_gate and model.gate is None:
            raise ValueError("exits='gate' needs a gate: call model.set_gate(gate) first")
        if settings.uses_gate and getattr(model.gate, "features", "backbone") != "backbone":
            raise ValueError("a CUDA graph takes a gate that decides before the encoder (--features backbone); "
                             "an exit-2 gate decides after layer 2, inside the encoder loop")
        self.model, self.settings = model, settings
        self._graphs: dict[tuple, _Captured] = {}

    def encoder(self, prep: Any, exit_layer: int):
        """The encoder's :class:`RunResult` of ``prep`` at a fixed exit, from its graph."""
        key = (exit_layer, prep.gate_features.shape[0], *[tuple(t.shape) for t in _tensors(prep)])
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._graphs[key] = _Captured(self.model, self.settings, prep, exit_layer)
        return captured.run(prep)

    def __call__(self, images: torch.Tensor, padding_mask: torch.Tensor | None = None) -> AdaptiveOutput:
        if padding_mask is not None:
            raise ValueError("a CUDA graph runs batches without padding (pass padding_mask=None)")
        if torch.is_grad_enabled():
            raise ValueError("a CUDA graph is for inference: call it under torch.inference_mode()")
        model, s = self.model, self.settings
        b, _, h, w = images.shape
        prep = model.prepare(images, None)
        if s.uses_gate:
            plan = model.gate.predict(prep.gate_features)
            exits = plan.tolist()  # the batch's one read of its exits
        else:
            exit_layer = model.depth if s.exits is None else s.exits
            exits = [exit_layer] * b
            plan = torch.full((b,), exit_layer, dtype=torch.long, device=images.device)
        paused: list[PauseRecord] = []
        if len(set(exits)) == 1:
            result = self.encoder(prep, exits[0])
            tokens = result.tokens.clone()
            paused = [PauseRecord(r.layer, r.rows.clone(), r.positions.clone()) for r in result.paused]
        else:
            tokens = None
            for exit_layer in sorted(set(exits)):
                idx = [i for i, e in enumerate(exits) if e == exit_layer]
                rows = torch.tensor(idx, device=images.device)
                result = self.encoder(prep_rows(prep, rows, b), exit_layer)
                if tokens is None:
                    tokens = result.tokens.new_empty((b, *result.tokens.shape[1:]))
                tokens.index_copy_(0, rows, result.tokens)
                paused += [PauseRecord(r.layer, rows.index_select(0, r.rows), r.positions.clone())
                           for r in result.paused]
            paused.sort(key=lambda r: r.layer)
        return AdaptiveOutput(heads=model.decode(tokens, prep), exits={}, exit_plan=plan,
                              gate_features=prep.gate_features, paused=paused, token_shapes=prep.token_shapes,
                              input_size=(h, w), padding_mask=None)


_graphed: "weakref.WeakKeyDictionary[Any, dict[AdaptiveSettings, GraphedModel]]" = weakref.WeakKeyDictionary()


def graphed_for(model, settings: AdaptiveSettings) -> GraphedModel:
    """The :class:`GraphedModel` of ``model`` at ``settings``, built on first use and kept as
    long as the model lives (its graphs are captured per batch and image size)."""
    per_model = _graphed.setdefault(model, {})
    if settings not in per_model:
        per_model[settings] = GraphedModel(model, settings)
    return per_model[settings]


def _tensors(prep: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    _map_prep(prep, lambda name, t: found.append(t) or t)
    return found
