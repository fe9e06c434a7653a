"""Data-dependent FLOP counting: per image, split into total and encoder (or any scope).

Counting uses :class:`torch.utils.flop_counter.FlopCounterMode`, which sees every aten op a
forward runs, so what an image actually executes is counted: its exit (layers it skipped
cost nothing), its paused tokens (smaller matmuls), the gate, the auxiliary decoders and the
deformable attention. Conventions:

* **FLOPs = 2 x multiply-adds** (PyTorch's convention: a (m,k)x(k,n) matmul is 2mkn).
  The papers' "GFLOPs" (fvcore / detectron2, as in Mask2Former, ECO-M2F and PAUMER) count
  one multiply-add as one FLOP: those are :attr:`FlopCount.gmacs` here.
* Only contractions are counted (matmul, conv, attention, and the sampling ops below);
  pointwise ops, softmax, normalisation and interpolation are not, as in FlopCounterMode
  and fvcore.
* Formulas registered for what FlopCounterMode does not know:

  - ``adaseg::ms_deform_attn`` (the compiled op, when the extension is loaded: checked with
    ``hasattr(torch.ops.adaseg, "ms_deform_attn")``): for every query, head, level, point
    and channel, **4** multiply-adds of bilinear interpolation (four corner values times their
    weights) + **1** for the attention weight: ``2 * N*Lq*M*L*P*D * (4 + 1)`` FLOPs.
  - ``aten._scaled_dot_product_flash_attention_for_cpu`` (CPU ``F.scaled_dot_product_attention``,
    used by the ViT and Swin blocks): its two matmuls, as torch counts the CUDA variants.
  - ``aten.grid_sampler_2d`` (the pure-PyTorch reference path samples with
    ``F.grid_sample``): ``2 * N*C*Ho*Wo * (k + 1)`` with k = 4 (bilinear), 0 (nearest),
    16 (bicubic) corner multiply-adds, **+1 for the attention weighting** that follows every
    grid sample in adaseg's deformable attention (the reference does it as a pointwise
    multiply and a sum, which FlopCounterMode does not count). Both paths therefore count
    the same for the same attention. ``aten.cudnn_grid_sampler`` (bilinear) likewise.

* Kernels launched outside PyTorch's dispatcher (a raw Triton launch) are invisible to
  FlopCounterMode. FLOPs do not depend on the device, so count on CPU, where adaseg's
  pausing and deformable attention run through dispatcher-visible paths.

Scopes: :class:`FlopCounter` takes ``scopes={"encoder": module_or_modules}``; a scope's
FLOPs are everything counted between entering and leaving any of its modules' ``forward``
(nested or repeated calls are counted once per outermost call). What the encoder scope
covers is therefore what its module's forward runs (for Mask2Former: the pixel decoder's
encoder of whichever kind -- deformable, Lite or RT-DETR's AIFI + CCFM convolutions --
including pausing's auxiliary decoders when they are its submodules; not the input
projections nor the FPN path, which every kind shares).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from adaseg.ops import _extension

BILINEAR_MACS = 4  # four corner values, each times its interpolation weight
WEIGHTING_MACS = 1  # the sampled value times its attention weight, summed over levels/points
_GRID_SAMPLE_MACS = {0: 4, 1: 0, 2: 16}  # aten interpolation_mode: bilinear, nearest, bicubic


def ms_deform_attn_flop(value_shape, spatial_shapes_shape, level_start_index_shape, locations_shape,
                        weights_shape, *, out_shape=None, **kwargs) -> int:
    """FLOPs of ``ms_deform_attn``: value (N, S, M, D), locations (N, Lq, M, L, P, 2)."""
    _, _, _, d = value_shape
    n, lq, m, levels, points, _ = locations_shape
    return 2 * n * lq * m * levels * points * d * (BILINEAR_MACS + WEIGHTING_MACS)


def grid_sampler_2d_flop(input_shape, grid_shape, interpolation_mode=0, padding_mode=0, align_corners=False,
                         *, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten.grid_sampler_2d``: input (N, C, H, W), grid (N, Ho, Wo, 2)."""
    n, c, _, _ = input_shape
    _, ho, wo, _ = grid_shape
    return 2 * n * c * ho * wo * (_GRID_SAMPLE_MACS[int(interpolation_mode)] + WEIGHTING_MACS)


def cudnn_grid_sampler_flop(input_shape, grid_shape, *, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten.cudnn_grid_sampler`` (always bilinear)."""
    return grid_sampler_2d_flop(input_shape, grid_shape, 0, out_shape=out_shape)


def sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of CPU scaled-dot-product attention (``aten._scaled_dot_product_flash_attention_for_cpu``,
    which FlopCounterMode has no formula for): query (B, H, L, E), key (B, H, S, E), value
    (B, H, S, Ev) -> the two matmuls, ``2*B*H*L*S*E + 2*B*H*L*S*Ev``."""
    b, h, l, e = query_shape
    s, ev = key_shape[-2], value_shape[-1]
    return 2 * b * h * l * s * e + 2 * b * h * l * s * ev


def extension_loaded() -> bool:
    """Load ``adaseg._C`` if it was built, then report whether the custom op is registered."""
    if _extension.is_built():
        _extension.load()
    return hasattr(torch.ops.adaseg, "ms_deform_attn")


def custom_formulas() -> dict[Any, Callable[..., int]]:
    """The formulas above, keyed by op packet (the custom op only when it exists)."""
    formulas: dict[Any, Callable[..., int]] = {
        torch.ops.aten.grid_sampler_2d: grid_sampler_2d_flop,
        torch.ops.aten.cudnn_grid_sampler: cudnn_grid_sampler_flop,
    }
    if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        formulas[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = sdpa_cpu_flop
    if extension_loaded():
        formulas[torch.ops.adaseg.ms_deform_attn] = ms_deform_attn_flop
    return formulas


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one counted call: ``total``, per scope and per op (FLOPs = 2 x multiply-adds)."""

    total: int
    scopes: dict[str, int] = field(default_factory=dict)
    by_op: dict[str, int] = field(default_factory=dict)

    @property
    def gflops(self) -> float:
        return self.total / 1e9

    @property
    def gmacs(self) -> float:
        """Multiply-adds / 1e9: the papers' (fvcore's) "GFLOPs"."""
        return self.total / 2e9


@contextlib.contextmanager
def _frozen(model: nn.Module | None):
    # Parameters back to requires_grad=True afterwards, exactly those that had it.
    params = [p for p in model.parameters() if p.requires_grad] if model is not None else []
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class _Scope:
    # FLOPs counted between entering and leaving the outermost call of any member module.
    def __init__(self, counter: FlopCounterMode):
        self.counter = counter
        self.depth = 0
        self.start = 0
        self.flops = 0

    def enter(self, *_):
        if self.depth == 0:
            self.start = self.counter.get_total_flops()
        self.depth += 1

    def leave(self, *_):
        self.depth -= 1
        if self.depth == 0:
            self.flops += self.counter.get_total_flops() - self.start


def _members(mods: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    # Containers are never called themselves (ModuleList has no forward): use their children.
    out = []
    for mod in [mods] if isinstance(mods, nn.Module) else mods:
        if isinstance(mod, (nn.ModuleList, nn.ModuleDict)):
            out.extend(_members(list(mod.children())))
        else:
            out.append(mod)
    return out


class FlopCounter:
    """Counts FLOPs of calls, with named scopes.

    Args:
        scopes: ``{"encoder": module or [modules]}``; each scope's FLOPs are reported in
            :attr:`FlopCount.scopes`. A ``ModuleList``/``ModuleDict`` stands for its children
            (containers are never called themselves).
        model: the model the counted calls run. Its parameters are set to
            ``requires_grad=False`` while counting (and restored): FlopCounterMode's module
            tracker fails on inputs that require grad but have no autograd history, which is
            what a view of a parameter taken under ``no_grad`` is (e.g. Mask2Former's query
            embeddings passed to the decoder layers).
    """

    def __init__(
        self,
        *,
        model: nn.Module | None = None,
        scopes: Mapping[str, nn.Module | Sequence[nn.Module]] | None = None,
    ):
        self.model = model
        self.scopes = {name: _members(mods) for name, mods in (scopes or {}).items()}
        self.formulas = custom_formulas()

    def count(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, FlopCount]:
        """Run ``fn(*args, **kwargs)`` under the counter (and ``torch.no_grad``); return
        ``(result, FlopCount)``."""
        mode = FlopCounterMode(display=False, custom_mapping=self.formulas)
        trackers = {name: _Scope(mode) for name in self.scopes}
        handles = []
        for name, mods in self.scopes.items():
            for mod in mods:
                handles.append(mod.register_forward_pre_hook(trackers[name].enter))
                handles.append(mod.register_forward_hook(trackers[name].leave, always_call=True))
        try:
            with torch.no_grad(), _frozen(self.model), mode:
                result = fn(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()
        by_op = {str(op): int(v) for op, v in mode.get_flop_counts().get("Global", {}).items()}
        return result, FlopCount(
            total=int(mode.get_total_flops()),
            scopes={name: int(t.flops) for name, t in trackers.items()},
            by_op=by_op,
        )


def count_flops(fn: Callable[..., Any], *args: Any, scopes=None, model: nn.Module | None = None,
                **kwargs: Any) -> FlopCount:
    """FLOPs of one call ``fn(*args, **kwargs)``; see :class:`FlopCounter` (``model``
    defaults to ``fn`` when ``fn`` is a module)."""
    if model is None and isinstance(fn, nn.Module):
        model = fn
    return FlopCounter(model=model, scopes=scopes).count(fn, *args, **kwargs)[1]


@dataclass
class FlopStats:
    """Per-image counts and their mean ± std (population std over the images counted)."""

    per_image: list[FlopCount]

    def values(self, scope: str | None = None) -> torch.Tensor:
        """(N,) float64 FLOPs of each image, total or of ``scope``."""
        return torch.tensor(
            [float(c.total if scope is None else c.scopes[scope]) for c in self.per_image], dtype=torch.float64
        )

    def mean_std(self, scope: str | None = None, *, unit: float = 1e9) -> tuple[float, float]:
        """(mean, std) in ``unit`` (default GFLOPs); NaN for no images."""
        v = self.values(scope) / unit
        if v.numel() == 0:
            return math.nan, math.nan
        return float(v.mean()), float(v.std(unbiased=False))

    def summary(self) -> dict[str, Any]:
        """``{"images": N, "gflops": {"total": {"mean", "std"}, scope: {...}}, "gmacs": {...}}``."""
        scopes = list(self.per_image[0].scopes) if self.per_image else []
        out: dict[str, Any] = {"images": len(self.per_image)}
        for key, unit in (("gflops", 1e9), ("gmacs", 2e9)):
            out[key] = {}
            for scope in [None, *scopes]:
                mean, std = self.mean_std(scope, unit=unit)
                out[key]["total" if scope is None else scope] = {"mean": mean, "std": std}
        return out


def per_image_flops(
    forward_one: Callable[[int], Any],
    num_images: int,
    *,
    model: nn.Module | None = None,
    scopes: Mapping[str, nn.Module | Sequence[nn.Module]] | None = None,
    on_image: Callable[[int, FlopCount], None] | None = None,
) -> FlopStats:
    """Count ``forward_one(i)`` for ``i in range(num_images)``, each image alone.

    ``forward_one(i)`` runs the model on image ``i`` as a batch of one, with whatever the
    evaluation uses (gate, exit, pause plan), so each count is that image's own cost.
    ``model``: see :class:`FlopCounter`.
    """
    counter = FlopCounter(model=model, scopes=scopes)
    counts = []
    for i in range(num_images):
        _, c = counter.count(forward_one, i)
        counts.append(c)
        if on_image is not None:
            on_image(i, c)
    return FlopStats(per_image=counts)
