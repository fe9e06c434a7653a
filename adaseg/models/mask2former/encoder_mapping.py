"""Start a Mask2Former of one encoder kind from a checkpoint of another (``train-parent
--init CKPT --init-encoder KIND``).

The encoder kinds (:mod:`~adaseg.models.mask2former.encoder_kinds`) name their parameters
differently on purpose, so a plain load refuses another kind's file. This module is the
explicit, opt-in mapping between them, on state dicts (no file, no model built):

* ``deform`` <-> ``lite``: the same layer (:class:`~adaseg.models.mask2former.encoder.DeformableEncoderLayer`),
  so layer i maps one to one: ``encoder.layers.{i}`` <-> ``high_layers.{i}`` for i < K-1 and
  ``encoder.layers.{K-1}`` <-> ``all_layer``; ``level_embed`` and ``aux_decoders.*`` keep their
  names. Both encoders must have the same depth and every mapped tensor the same shape.
* to or from ``rt`` (no deformable layer to map): every tensor outside the encoder is loaded,
  the whole encoder (``pixel_decoder.transformer.*``) keeps the model's initialisation.

Everything outside the encoder (backbone, input projections, FPN path, transformer decoder)
must match by name and shape: a checkpoint of another backbone, width or class count is
refused in one line naming the first mismatch, as is a ``source_kind`` that is not the file's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from adaseg.models.mask2former.encoder_kinds import DEFORMABLE_KINDS, ENCODER_KINDS

ENCODER_PREFIX = "pixel_decoder.transformer."
# the key every kind has and the others have not (see each encoder's parameter names)
_MARKERS = {"deform": ENCODER_PREFIX + "encoder.layers.", "lite": ENCODER_PREFIX + "high_layers.",
            "rt": ENCODER_PREFIX + "aifi."}
_DEFORM_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_LITE_HIGH = re.compile(r"^high_layers\.(\d+)\.(.+)$")
_LITE_ALL = re.compile(r"^all_layer\.(.+)$")


class EncoderMappingError(ValueError):
    """A checkpoint whose weights cannot be mapped onto the model (one line)."""


@dataclass
class EncoderMapping:
    """What :func:`map_encoder_state` did, key by key (the model's keys).

    ``mapped``: model key -> the checkpoint key it was taken from (renamed encoder layers);
    ``loaded``: model keys taken from the checkpoint under the same name; ``fresh``: model keys
    left at the model's initialisation; ``dropped``: checkpoint keys nothing took.
    """

    source_kind: str
    target_kind: str
    mapped: dict[str, str] = field(default_factory=dict)
    loaded: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-ready record (config.json's ``init_encoder``): counts and the key lists."""
        return {"from": self.source_kind, "to": self.target_kind, "mapped": dict(self.mapped),
                "loaded": len(self.loaded), "fresh": list(self.fresh), "dropped": list(self.dropped)}

    def line(self) -> str:
        """One line for the start of a run."""
        return (f"encoder {self.source_kind} -> {self.target_kind}: {len(self.mapped)} tensors mapped, "
                f"{len(self.loaded)} loaded as named, {len(self.fresh)} left fresh, {len(self.dropped)} dropped")


def encoder_kind_of(keys) -> str | None:
    """The encoder kind whose parameter names ``keys`` (a state dict's) hold, or None when they
    hold no Mask2Former encoder (another model family)."""
    keys = list(keys)
    found = [kind for kind, marker in _MARKERS.items() if any(k.startswith(marker) for k in keys)]
    return found[0] if len(found) == 1 else None


def _depth(keys, kind: str) -> int:
    """Encoder layers of a deformable kind, from its key names."""
    if kind == "deform":
        rx = _DEFORM_LAYER
        idx = {int(m.group(1)) for k in keys if (m := rx.match(k.removeprefix(ENCODER_PREFIX)))}
        return max(idx) + 1 if idx else 0
    idx = {int(m.group(1)) for k in keys if (m := _LITE_HIGH.match(k.removeprefix(ENCODER_PREFIX)))}
    return (max(idx) + 2) if idx else 0  # K-1 high-level layers + the all-scale one


def _canonical(rest: str, kind: str, depth: int) -> str:
    """An encoder key (without ENCODER_PREFIX) as ``layers.{i}.<param>`` (i = 0..K-1), or as is
    when it is not a layer's (``level_embed``, ``aux_decoders.*``)."""
    if kind == "deform":
        m = _DEFORM_LAYER.match(rest)
        return f"layers.{m.group(1)}.{m.group(2)}" if m else rest
    if m := _LITE_HIGH.match(rest):
        return f"layers.{m.group(1)}.{m.group(2)}"
    if m := _LITE_ALL.match(rest):
        return f"layers.{depth - 1}.{m.group(1)}"
    return rest


def map_encoder_state(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], *, source_kind: str,
                      target_kind: str) -> tuple[dict[str, torch.Tensor], EncoderMapping]:
    """The full state dict for the model whose state is ``target``, taken from ``source`` (a
    checkpoint of encoder kind ``source_kind``) as the module docstring says.

    Returns ``(state, mapping)``: ``state`` has exactly ``target``'s keys (fresh ones are
    ``target``'s own tensors). Raises :class:`EncoderMappingError` (one line) when the pairing
    is wrong (same kind, unknown kind, ``source_kind`` not the file's), the depths differ, a
    key outside the encoder is missing or extra, or any taken tensor's shape differs.
    """
    for role, kind in (("checkpoint", source_kind), ("model", target_kind)):
        if kind not in ENCODER_KINDS:
            raise EncoderMappingError(f"unknown {role} encoder kind {kind!r}; choose one of {', '.join(ENCODER_KINDS)}")
    found = encoder_kind_of(source)
    if found is None:
        raise EncoderMappingError("the checkpoint holds no Mask2Former encoder (none of the keys "
                                  f"{', '.join(m + '*' for m in _MARKERS.values())})")
    if found != source_kind:
        raise EncoderMappingError(f"--init-encoder {source_kind}: the checkpoint's encoder is {found!r} "
                                  f"(its keys), not {source_kind!r}")
    if source_kind == target_kind:
        raise EncoderMappingError(f"--init-encoder {source_kind}: the checkpoint's encoder is already the model's "
                                  f"kind; load it with --init alone")
    mapping = EncoderMapping(source_kind, target_kind)
    state: dict[str, torch.Tensor] = {}

    def take(key: str, src_key: str, how: str) -> None:
        s, t = source[src_key], target[key]
        if s.shape != t.shape:
            raise EncoderMappingError(f"{src_key} {tuple(s.shape)} in the checkpoint does not fit {key} "
                                      f"{tuple(t.shape)} in the model: the two are not the same architecture")
        state[key] = s
        if how == "mapped":
            mapping.mapped[key] = src_key
        else:
            mapping.loaded.append(key)

    outside_model = [k for k in target if not k.startswith(ENCODER_PREFIX)]
    outside_file = [k for k in source if not k.startswith(ENCODER_PREFIX)]
    missing = [k for k in outside_model if k not in source]
    extra = [k for k in outside_file if k not in target]
    if missing or extra:
        first = (f"missing from the checkpoint: {missing[0]}" if missing else f"not in the model: {extra[0]}")
        raise EncoderMappingError(f"outside the encoder the checkpoint does not fit the model ({len(missing)} missing, "
                                  f"{len(extra)} extra; {first})")
    mappable = source_kind in DEFORMABLE_KINDS and target_kind in DEFORMABLE_KINDS
    if mappable:
        d_src, d_tgt = _depth(source, source_kind), _depth(target, target_kind)
        if d_src != d_tgt:
            raise EncoderMappingError(f"the checkpoint's {source_kind} encoder has {d_src} layers, the model's "
                                      f"{target_kind} encoder {d_tgt}: layers map one to one only at equal depth")
        by_canonical = {_canonical(k.removeprefix(ENCODER_PREFIX), source_kind, d_src): k
                        for k in source if k.startswith(ENCODER_PREFIX)}
    used = set()
    for key in target:
        if not key.startswith(ENCODER_PREFIX):
            take(key, key, "loaded")
            used.add(key)
            continue
        if not mappable:
            state[key] = target[key]
            mapping.fresh.append(key)
            continue
        src_key = by_canonical.get(_canonical(key.removeprefix(ENCODER_PREFIX), target_kind, d_tgt))
        if src_key is None:
            raise EncoderMappingError(f"{key} of the model has no counterpart in the checkpoint's {source_kind} encoder")
        take(key, src_key, "loaded" if src_key == key else "mapped")
        used.add(src_key)
    mapping.dropped = [k for k in source if k not in used]  # with rt on either side: the file's whole encoder
    return state, mapping
