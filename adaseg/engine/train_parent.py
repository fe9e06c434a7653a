"""Step A: train the parent so every exit is good (ECO-M2F) and pausing is harmless (PAUMER).

Recipes (``--recipe``):

* ``standard``: Mask2Former's loss at full depth only (the baseline of ECO-M2F's Table 5).
* ``wsd``: weighted stochastic depth. One encoder pass yields the tokens after every exit
  layer (``record_exits``); the shared decoder runs on each; the loss is
  ``sum_k alpha_k L_k`` (Eq. 3), alpha increasing with k.
* ``pause``: PAUMER's randomised training at full depth: every iteration one layer ``l`` is
  drawn from ``pause_layers`` and a ratio ``tau ~ U[lo, hi]``; the ``tau`` lowest-entropy
  tokens after layer ``l`` are paused; the auxiliary decoder's cross-entropy is added with
  weight ``aux_weight``.
* ``wsd+pause`` (default): both at once (the pause then applies to every exit past ``l``).

**Self-distillation** (``--distill LAMBDA``, off by default; wsd recipes, Mask2Former models):
every earlier exit is also pulled toward the deepest exit's (detached) class distribution and
mask probabilities, ``loss += LAMBDA * sum_{k<K} alpha_k (D_cls,k + D_mask,k)`` with
temperature ``--distill-temperature`` (Li et al. 2019; exact definition in
:func:`adaseg.models.adaptive.losses.exit_distillation`). Both are recorded in config.json's
``train`` and the parent's settings, so runs with and without it are told apart. It is an
option, not the default: whether it wins (Table 5's exit curve with intervals) has not been
measured at scale.

Default exit weights: ``alpha_k = k / K`` (K the encoder depth): increasing, as Eq. 3 asks,
and the deepest exit weighs 1, as in the standard loss. (The paper gives no values.)

Optimisation as Mask2Former: AdamW (weight decay 0.05), backbone learning rate x 0.1,
gradient clipping of the whole model's L2 norm at 0.01, poly decay (power 0.9), no warm-up;
DETR models default to DETR's weight decay 1e-4 and clip 0.1 (:data:`OPTIMISER_DEFAULTS`);
what the user gives wins.

**Resumable and reproducible.** The state (weights, AdamW moments, iteration) is written
atomically to ``checkpoints/last.safetensors`` every ``ckpt_every`` iterations (via a pending
file that replaces it once the next iteration's loss and gradients are finite, so a diverging
run keeps its last good state). Everything
random in iteration ``i`` (the batch's images, their augmentation, the pause draw) is a
function of ``(seed, i)`` only, so a run killed at any point and resumed with ``--resume``
continues exactly as if it had not been interrupted. At the end the weights are written to
``checkpoints/parent.safetensors``, the input of every later step.

**Initialisation** (``--init``): a parent or training state of the same model, an imported
Hugging Face Mask2Former (``--model hf-mask2former``; the paper starts Step A from trained
Mask2Former weights), or a backbone-only checkpoint from ``adaseg import-weights
--timm-backbone`` (e.g. ImageNet Swin-T for ``m2f_swin_t``; the rest of the model starts
from its initialisation -- the way to train the plain Mask2Former with ``--recipe standard``).
A Mask2Former checkpoint of another encoder kind is refused unless ``--init-encoder KIND``
(its kind) asks for the mapping of :mod:`adaseg.engine.init_encoder` (deform <-> lite layer by
layer; to or from rt the encoder stays fresh); what was mapped is recorded in config.json's
``init_encoder``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from adaseg.runs.run_dir import recreate_hint
from adaseg.models.adaptive.output import AdaptiveOutput
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.mask2former.matcher import NonFiniteError
from adaseg.storage.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
    sidecar_path,
)
from adaseg.choices import RECIPES
from adaseg.runs.parent import (
    IMPORTED_MODEL,
    PARENT_KIND,
    TRAIN_STATE_KIND,
    IMPORTED_DETR,
    build_model,
    check_weights_fit,
    load_backbone_weights,
    load_model_weights,
    model_options_for,
    parent_config,
    shipped_base,
)
from adaseg.utils.progress import progress_or_none
from adaseg.runs.run_dir import RunDir, RunDirError

# config.json and every training state of a run record this random id: --resume refuses a state
# copied from another run (a state written before run ids has none and is accepted).
RUN_ID_KEY = "run_id"

# Beyond these a count is a typo, not a plan: counters and the progress bar hold C ints, and a
# batch is drawn image by image.
MAX_ITERS = 10**9
MAX_BATCH_SIZE = 2**16

# Settings a resumed run may change; every other one must match the interrupted run.
RESUMABLE_CHANGES = ("iters", "ckpt_every")


class TrainSettingError(ValueError):
    """A Step A setting is invalid; ``param`` names the option."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


# The optimiser each model family was published with, for the settings the user leaves out.
# Mask2Former (Cheng et al. 2022, its detectron2 configs): AdamW lr 1e-4, weight decay 0.05,
# backbone lr x 0.1, full-model gradient clip 0.01 -- also used for Segmenter and SETR here.
# DETR (Carion et al. 2020, Sec. 4 and its main.py defaults): AdamW lr 1e-4, backbone lr 1e-5
# (x 0.1), weight decay 1e-4, gradient clip max norm 0.1.
OPTIMISER_DEFAULTS = {
    "mask2former": {"lr": 1e-4, "backbone_lr_mult": 0.1, "weight_decay": 0.05, "clip": 0.01},
    "detr": {"lr": 1e-4, "backbone_lr_mult": 0.1, "weight_decay": 1e-4, "clip": 0.1},
}


def optimiser_defaults(model: str) -> dict[str, float]:
    """``{"lr", "backbone_lr_mult", "weight_decay", "clip"}`` for ``model``'s family (DETR's for
    DETR models, Mask2Former's for every other and for a name the registry does not know, whose
    error comes when the model is built)."""
    from adaseg.runs.parent import model_family

    try:
        family = model_family(model)
    except ValueError:
        family = "mask2former"
    return dict(OPTIMISER_DEFAULTS.get(family, OPTIMISER_DEFAULTS["mask2former"]))


@dataclass
class TrainSettings:
    """Everything that defines a Step A run (recorded in config.json and the checkpoints).

    ``exits``/``alphas``/``pause_layers`` None mean the defaults described in the module
    docstring (exits: the model's, 2..K).
    """

    model: str = "m2f_tiny"
    data: str = "synthetic"
    init: str = "auto"
    # the encoder kind of the --init checkpoint, when it is not the model's: opt-in mapping
    init_encoder: str | None = None
    recipe: str = "wsd+pause"
    exits: tuple[int, ...] | None = None
    alphas: tuple[float, ...] | None = None
    pause_layers: tuple[int, ...] | None = None
    pause_range: tuple[float, float] = (0.2, 0.8)
    aux_weight: float = 0.1
    distill: float = 0.0
    distill_temperature: float = 1.0
    iters: int = 500
    batch_size: int = 8
    # None: the model family's value (optimiser_defaults), filled in on construction
    lr: float | None = None
    weight_decay: float | None = None
    backbone_lr_mult: float | None = None
    clip: float | None = None
    poly_power: float = 0.9
    amp: bool = False
    seed: int = 0
    ckpt_every: int = 25

    def __post_init__(self) -> None:
        for key, value in optimiser_defaults(self.model).items():
            if getattr(self, key) is None:
                setattr(self, key, value)

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrainSettings":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in fields})

    @property
    def uses_wsd(self) -> bool:
        return self.recipe in ("wsd", "wsd+pause")

    @property
    def uses_pause(self) -> bool:
        return self.recipe in ("pause", "wsd+pause")


@dataclass
class Resolved:
    """Settings checked against the model: concrete exits, alphas and pause layers."""

    exits: tuple[int, ...]
    alphas: dict[int, float]
    pause_layers: tuple[int, ...]
    depth: int


def check_settings(s: TrainSettings) -> None:
    """Checks that need no model; raise :class:`TrainSettingError` naming the option."""
    if s.recipe not in RECIPES:
        raise TrainSettingError("recipe", f"--recipe must be one of {', '.join(RECIPES)}, got {s.recipe!r}")
    _check_init_encoder(s)
    lo, hi = s.pause_range
    if not (0.0 < lo <= hi < 1.0):
        raise TrainSettingError("pause-range", f"--pause-range {lo:g}:{hi:g} must satisfy 0 < lo <= hi < 1")
    for name, value in (("iters", s.iters), ("batch-size", s.batch_size), ("ckpt-every", s.ckpt_every)):
        if value < 1:
            raise TrainSettingError(name, f"--{name} must be >= 1, got {value}")
    for name, value, most in (("iters", s.iters, MAX_ITERS), ("batch-size", s.batch_size, MAX_BATCH_SIZE)):
        if value > most:
            raise TrainSettingError(name, f"--{name} must be at most {most}, got {value}")
    for name, value in (("lr", s.lr), ("clip", s.clip)):
        if not (math.isfinite(value) and value > 0):
            raise TrainSettingError(name, f"--{name} must be > 0, got {value!r}")
    if not (math.isfinite(s.aux_weight) and s.aux_weight >= 0):
        raise TrainSettingError("aux-weight", f"--aux-weight must be >= 0, got {s.aux_weight!r}")
    if not (math.isfinite(s.distill) and s.distill >= 0):
        raise TrainSettingError("distill", f"--distill must be a finite number >= 0, got {s.distill!r}")
    if not (math.isfinite(s.distill_temperature) and s.distill_temperature > 0):
        raise TrainSettingError("distill-temperature",
                                f"--distill-temperature must be > 0, got {s.distill_temperature!r}")
    if s.distill > 0 and not s.uses_wsd:
        raise TrainSettingError("distill", f"--distill pulls the earlier exits toward the deepest: it needs the "
                                           f"exits a wsd recipe trains (--recipe wsd or wsd+pause), not {s.recipe}")
    if s.alphas is not None and any(not (math.isfinite(a) and a > 0) for a in s.alphas):
        raise TrainSettingError("alphas", f"--alphas must all be > 0, got {list(s.alphas)}")
    if s.alphas is not None and any(a >= b for a, b in zip(s.alphas, s.alphas[1:])):
        # ECO-M2F Eq. 3: alpha_k < alpha_k' for every k < k' (later exits weigh more)
        raise TrainSettingError("alphas", f"--alphas must strictly increase with the exit (ECO-M2F Eq. 3), "
                                          f"got {','.join(map(repr, s.alphas))}")


def check_recipe_pauses(s: TrainSettings, model: nn.Module | None = None) -> None:
    """A recipe that pauses tokens (``pause``, ``wsd+pause``, the default) on a model that cannot
    pause (its ``pause_refusal``, e.g. RT-M2F's) raises :class:`TrainSettingError` for
    ``--recipe``, naming why. ``model``: the built model; None reads a registered model's refusal
    without building its weights (:func:`~adaseg.models.registry.pause_refusal`), so the CLI
    refuses before the run directory is touched. An imported model (built from ``--init``) or an
    unknown name is left to the check on the built model."""
    from adaseg.models.registry import list_models, pause_refusal

    if not s.uses_pause:
        return
    if model is not None:
        refusal = getattr(model, "pause_refusal", None)
    elif s.model in list_models():
        refusal = pause_refusal(s.model)
    else:
        return
    if refusal is not None:
        raise TrainSettingError("recipe", f"--recipe {s.recipe} trains with pausing (PAUMER), but {s.model} cannot "
                                          f"pause tokens: {refusal}; train it with --recipe standard or wsd")


def resolve(s: TrainSettings, depth: int, model_exits: tuple[int, ...] | None = None) -> Resolved:
    """Concrete exits / alphas / pause layers for an encoder of ``depth`` layers; without
    ``--exits`` the model's potential exits (``model_exits``; 2..depth when None)."""
    default = tuple(range(2, depth + 1)) if model_exits is None else tuple(model_exits)
    # the model's deepest exit is its full model: depth, or for Lite-ECO-M2F the last exit
    # before the kept all-scale layer (exit 5 + layer 6)
    full = default[-1]
    exits = default if s.exits is None else tuple(s.exits)
    if not exits or list(exits) != sorted(set(exits)) or exits[0] < 1 or exits[-1] > depth:
        raise TrainSettingError("exits", f"--exits {','.join(map(str, exits))} must be increasing layers in 1..{depth}")
    if s.uses_wsd and exits[-1] < full:
        what = f"the full depth {depth}" if full == depth else f"the model's full exit {full}"
        raise TrainSettingError("exits", f"--exits must include {what} (got {list(exits)})")
    if s.alphas is None:
        alphas = {k: min(k / full, 1.0) for k in exits}
    else:
        if len(s.alphas) != len(exits):
            raise TrainSettingError(
                "alphas", f"--alphas has {len(s.alphas)} values for {len(exits)} exits {list(exits)}"
            )
        alphas = dict(zip(exits, (float(a) for a in s.alphas)))
    # pause stages between the exits (a stage after the full exit would pause nothing)
    layers = tuple(range(2, full)) if s.pause_layers is None else tuple(s.pause_layers)
    if s.uses_pause:
        bad = [l for l in layers if not 1 <= l < depth]
        if not layers or bad:
            raise TrainSettingError(
                "pause-layers", f"--pause-layers {list(layers)}: layers must lie in 1..{depth - 1} (below the depth {depth})"
            )
    return Resolved(exits=exits, alphas=alphas, pause_layers=layers, depth=depth)


# ----------------------------------------------------------------------------------------
# Determinism: everything random in iteration i is a function of (seed, i)
# ----------------------------------------------------------------------------------------


def iteration_seed(seed: int, iteration: int) -> int:
    return (seed * 1_000_003 + iteration * 7919 + 12345) % (2**63 - 1)


def batch_indices(n: int, batch_size: int, iteration: int, seed: int) -> list[int]:
    """The dataset indices of iteration ``iteration``: epochs are seeded permutations, read in
    consecutive slices (a batch may span two epochs)."""
    start = iteration * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7_777 + epoch))
        take = min(batch_size - len(out), n - offset)
        out.extend(perm[offset : offset + take].tolist())
    return out


def draw_pause(layers: tuple[int, ...], lo: float, hi: float, generator: torch.Generator):
    """PAUMER's per-iteration draw: one layer uniformly, tau ~ U[lo, hi]."""
    from adaseg.models.adaptive.plan import PausePlan

    layer = layers[int(torch.randint(len(layers), (1,), generator=generator))]
    tau = lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))
    return PausePlan(((int(layer), tau),))


# ----------------------------------------------------------------------------------------
# Optimiser and its (de)serialisation
# ----------------------------------------------------------------------------------------


def build_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.AdamW:
    """AdamW with Mask2Former's groups: the pretrained backbone (every parameter of
    the model's ``backbone``, e.g. all of Segmenter's ViT including its class
    token and positions) x ``backbone_lr_mult``; no decay on norms, biases and embeddings (as
    detectron2's ``WEIGHT_DECAY_NORM/EMBED = 0``)."""
    backbone = {id(p) for p in model.backbone.parameters()}
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mult = s.backbone_lr_mult if id(p) in backbone else 1.0
        no_decay = p.dim() <= 1 or "level_embed" in name or "query" in name or "pos_embed" in name
        key = (mult, 0.0 if no_decay else s.weight_decay)
        groups.setdefault(key, []).append(p)
    param_groups = [
        {"params": ps, "lr": s.lr * mult, "lr_mult": mult, "weight_decay": wd} for (mult, wd), ps in sorted(groups.items())
    ]
    return torch.optim.AdamW(param_groups, lr=s.lr, betas=(0.9, 0.999), eps=1e-8)


def set_lr(optimizer: torch.optim.Optimizer, s: TrainSettings, iteration: int) -> float:
    """Poly schedule ``lr * (1 - i / iters) ** power``; returns the base lr of this iteration."""
    lr = s.lr * (1.0 - iteration / s.iters) ** s.poly_power
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
    return lr


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW state as named tensors ``optim.{param index}.{key}``."""
    out = {}
    for idx, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            out[f"optim.{idx}.{key}"] = torch.as_tensor(value)
    return out


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    current = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


# ----------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    iterations: int
    resumed_from: int
    seconds: float
    last_losses: dict[str, float]
    parent_path: str
    init: str | None


def _autocast(device: torch.device, enabled: bool):
    # bfloat16 needs no loss scaling, on CPU and CUDA alike
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def resolve_init(s: TrainSettings) -> str | None:
    """``--init``: ``auto`` = the shipped base for (model, data) when there is one, else none."""
    if s.init == "auto":
        base = shipped_base(s.model, s.data)
        return None if base is None else str(base)
    if s.init == "none":
        return None
    return s.init


def init_is_backbone(path: str) -> bool:
    """True when ``--init`` is a backbone-only checkpoint (``import-weights --timm-backbone``)."""
    from adaseg.storage.checkpoint import read_checkpoint_meta
    from adaseg.runs.parent import BACKBONE_KIND

    return read_checkpoint_meta(path, hint=recreate_hint(path)).kind == BACKBONE_KIND


def check_init(path: str, model_name: str) -> None:
    """Fail early (before anything is written) if ``--init`` is neither a checkpoint of this
    model nor a backbone checkpoint (whose fit is checked when it is loaded, also before any
    file is written)."""
    from adaseg.runs.parent import read_model_config

    if init_is_backbone(path):
        if model_name in (IMPORTED_MODEL, IMPORTED_DETR):
            raise CheckpointError(f"--init {path} holds a backbone only; --model {model_name} needs a whole "
                                  "model from `adaseg import-weights --hf`")
        return
    name, _, _ = read_model_config(path)
    check_weights_fit(f"--init {path}", name, model_name)


def imported_options(s: TrainSettings, path, meta) -> dict[str, Any]:
    """The import config of an ``adaseg import-weights --hf`` model (``--model hf-mask2former``),
    checked against the dataset's classes, with ``--exits`` applied."""
    from adaseg.runs.parent import read_model_config

    if path is None:
        raise TrainSettingError(
            "init", f"--model {s.model} builds the model from its --init checkpoint (made by "
            "`adaseg import-weights --hf`): pass --init FILE"
        )
    _, options, _ = read_model_config(path)
    model_cfg = dict(options["model"])
    if _init_rows(s, path, meta) is not None:  # a detector's classes matched by name: its head is remapped
        model_cfg["num_classes"] = meta.num_classes
    elif int(model_cfg["num_classes"]) != meta.num_classes:
        raise TrainSettingError(
            "init", f"--init {path} predicts {model_cfg['num_classes']} classes but --data {s.data} has "
            f"{meta.num_classes}"
        )
    if s.exits is not None:
        model_cfg["exits"] = [int(e) for e in s.exits]
    if s.model == IMPORTED_DETR:  # boxes for the dataset's things only (an import gives every class boxes)
        model_cfg["thing_ids"] = [int(t) for t in meta.thing_ids]
    return {**options, "model": model_cfg}


def _init_rows(s: TrainSettings, path, meta) -> list[int] | None:
    """The --init checkpoint's class-head rows for the data's classes when it is a detector whose
    classes differ from the data's but match them by name (:func:`adaseg.runs.class_match.head_rows`:
    each data category's row, then no-object); None otherwise. A failed match is an --init error."""
    from adaseg.runs.class_match import head_rows
    from adaseg.runs.run_dir import RunDirError

    try:
        return head_rows(path, meta, what=f"--init {path} vs --data {s.data!r}")
    except RunDirError as exc:
        raise TrainSettingError("init", str(exc)) from None


def train_parent(
    run: RunDir,
    settings: TrainSettings,
    *,
    device: torch.device,
    resume: bool = False,
    reporter=None,
    rank: int = 0,
    world_size: int = 1,
    on_iteration: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Run Step A into ``run`` (see the module docstring). Checks come first: a bad setting or
    checkpoint raises before any file is written."""
    from adaseg.data import build_dataset

    s = settings
    check_settings(s)
    _check_world_size(s, world_size)
    dataset = build_dataset(s.data, "train", train=True)
    model, options = _build_model(run, s, dataset, resume=resume)
    check_recipe_pauses(s, model)
    _check_distill(s, model)
    _check_data_task(model, dataset)
    res = resolve(s, model.depth, tuple(model.exits))
    task = model.task
    start, state_tensors, init, mapping = _load_start(run, s, model, resume=resume, meta=dataset.meta)
    untrained = _still_untrained(s, init)
    run_id = _resumed_run_id(run) if resume else uuid.uuid4().hex
    model.to(device).train()
    distill = {"distill_weight": s.distill, "distill_temperature": s.distill_temperature} if s.distill > 0 else {}
    criterion = model.build_criterion(aux_weight=s.aux_weight, **distill).to(device)
    optimizer = build_optimizer(model, s)
    if state_tensors is not None:
        load_optimizer(optimizer, {k: v.to(device) for k, v in state_tensors.items() if k.startswith("optim.")})
    train_model: nn.Module = model
    if world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)

    if rank == 0 and not resume:
        run.write_config({"model": s.model, "model_options": options, "data": s.data, "task": task,
                          "train": s.to_json(), "init": init, RUN_ID_KEY: run_id,
                          **({"init_encoder": mapping.summary()} if mapping is not None else {})})
    config = parent_config(s.model, options)
    _announce(reporter, s, res, len(dataset), start, init)
    if mapping is not None and reporter is not None:
        reporter.info(f"train-parent: --init-encoder {mapping.line()}")
    states = _TrainingStates(run, s, model, optimizer, config=config, init=init, rank=rank,
                             last_saved=start if resume else None, run_id=run_id)
    t0 = time.perf_counter()
    losses = _iterate(train_model, model, criterion, optimizer, dataset, s, res, states, start=start, device=device,
                      rank=rank, world_size=world_size, reporter=reporter, on_iteration=on_iteration)
    if rank == 0:
        save_checkpoint(run.parent_path, model.state_dict(), kind=PARENT_KIND, config=config,
                        extra={"task": task, "data": s.data, "settings": s.to_json(), "iterations": s.iters,
                               "init": init, "depth": res.depth, "untrained": untrained})
    return TrainResult(iterations=s.iters, resumed_from=start, seconds=time.perf_counter() - t0,
                       last_losses=losses, parent_path=str(run.parent_path), init=init)


def _still_untrained(s: TrainSettings, init: str | None) -> list[str]:
    """The parts the parent will hold untrained: PAUMER's auxiliary decoders learn only under a
    pause recipe, so a parent trained without one keeps its ``--init`` checkpoint's mark (an
    imported model's). Recorded in the parent itself, so that the refusal of entropy pausing
    does not depend on the ``--init`` file staying where it was."""
    from adaseg.runs.from_checkpoint import UNTRAINED_AUX, untrained_parts

    if s.uses_pause or not init or not os.path.isfile(init):
        return []
    meta = read_checkpoint_meta(init, hint=recreate_hint(init))
    return [p for p in untrained_parts(meta.kind, meta.extra) if p == UNTRAINED_AUX]


def _check_data_task(model: nn.Module, dataset) -> None:
    """A model that cannot learn from the data's labels (a segmentation model on detection data,
    a detection model on semantic data) is refused (DataError, one line) before anything is
    written; the pairs are :func:`adaseg.eval.tasks.registry.suite_for`'s."""
    from adaseg.eval.tasks.registry import suite_for

    suite_for(model.task, dataset.meta.task)


def _check_distill(s: TrainSettings, model: nn.Module) -> None:
    """--distill reads per-query class and mask logits (``pred_logits``, ``pred_masks``):
    Mask2Former's heads; other models are refused before anything is written."""
    from adaseg.models.mask2former.model import Mask2Former

    if s.distill > 0 and not isinstance(model, Mask2Former):
        raise TrainSettingError("distill", f"--distill is implemented for Mask2Former models (per-query class and "
                                           f"mask logits); {s.model} has other heads")


def _check_world_size(s: TrainSettings, world_size: int) -> None:
    """--batch-size counts the images of one iteration over all ranks: it must split evenly."""
    if s.batch_size % world_size:
        raise TrainSettingError(
            "batch-size", f"--batch-size {s.batch_size} (images per iteration over all ranks) is not a multiple of "
            f"the {world_size} processes"
        )


def _build_model(run: RunDir, s: TrainSettings, dataset, *, resume: bool) -> tuple[nn.Module, dict[str, Any]]:
    """The model to train, seeded with ``--seed``, and its options (recorded in config.json)."""
    if s.model in (IMPORTED_MODEL, IMPORTED_DETR):
        options = imported_options(s, run.last_path if resume else resolve_init(s), dataset.meta)
    else:
        options = model_options_for(s.model, dataset.meta, s.exits)
    torch.manual_seed(s.seed)
    return build_model(s.model, options), options


def _load_start(run: RunDir, s: TrainSettings, model: nn.Module, *, resume: bool, meta=None):
    """Load the starting weights into ``model``: the training state on ``resume``, else
    --init (mapped across encoder kinds with --init-encoder). Returns (first iteration, the
    state's tensors or None, the init recorded, the :class:`EncoderMapping` or None)."""
    if resume:
        tensors, meta = load_checkpoint(run.last_path, hint=recreate_hint(run.last_path))
        if meta.kind != TRAIN_STATE_KIND:
            raise CheckpointError(f"{run.last_path} is a {meta.kind!r} checkpoint, not a training state")
        check_state_identity(run, meta)
        load_model_weights(model, run.last_path, expect_model=s.model)
        start = int(meta.extra["iteration"])
        check_resume_iters(run, s, start)
        return start, tensors, meta.extra.get("init"), None
    init = resolve_init(s)
    if init is not None and s.init_encoder is not None:
        from adaseg.engine.init_encoder import load_across_encoders

        return 0, None, init, load_across_encoders(model, init, s.model, s.init_encoder)
    if init is not None:
        try:
            check_init(init, s.model)
        except CheckpointError as exc:  # another encoder kind: name its keys and --init-encoder
            from adaseg.engine.init_encoder import other_encoder_refusal

            raise other_encoder_refusal(init, s.model, exc) from None
        if init_is_backbone(init):
            load_backbone_weights(model, init)
        else:
            rows = None if meta is None else _init_rows(s, init, meta)
            load_model_weights(model, init, expect_model=s.model, class_rows=rows)
    return 0, None, init, None


def _check_init_encoder(s: TrainSettings) -> None:
    """--init-encoder names the kind of an --init checkpoint file: one of the encoder kinds,
    and only with --init CKPT (not auto or none)."""
    if s.init_encoder is None:
        return
    from adaseg.models.mask2former.encoder_kinds import ENCODER_KINDS

    if s.init_encoder not in ENCODER_KINDS:
        raise TrainSettingError("init-encoder", f"--init-encoder must be one of {', '.join(ENCODER_KINDS)}, "
                                                f"got {s.init_encoder!r}")
    if s.init in ("auto", "none"):
        raise TrainSettingError("init-encoder", f"--init-encoder {s.init_encoder} maps the encoder of an --init "
                                                f"checkpoint file; --init {s.init} names none")


def _announce(reporter, s: TrainSettings, res: Resolved, images: int, start: int, init: str | None) -> None:
    """The one line that says what this run trains."""
    say = reporter.info if reporter is not None else (lambda *_a, **_k: None)
    say(f"train-parent: {s.recipe} on {s.data} ({images} images), model {s.model} (depth {res.depth}), "
        f"iterations {start}..{s.iters}, batch {s.batch_size}, AdamW lr {s.lr:g} (backbone x {s.backbone_lr_mult:g}) "
        f"weight decay {s.weight_decay:g} clip {s.clip:g}, init {init or 'random'}"
        + (f", exits {list(res.exits)} alphas {[round(a, 4) for a in res.alphas.values()]}" if s.uses_wsd else "")
        + (f", pause layers {list(res.pause_layers)} tau U{list(s.pause_range)}" if s.uses_pause else ""))


class _TrainingStates:
    """The resumable training state on disk.

    A state is kept only once it has proved good: the state after iteration N goes to a pending
    file and replaces last.safetensors when iteration N+1's loss and gradients are finite, so a
    diverging training never overwrites the last good state with the one that diverged.
    ``last_saved``: the iteration last.safetensors holds (None: none saved); ``pending``: the
    iteration of the pending file (None: none). Only rank 0 writes.
    """

    def __init__(self, run: RunDir, s: TrainSettings, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                 config: dict, init: str | None, rank: int, last_saved: int | None, run_id: str | None = None):
        self.run, self.s, self.model, self.optimizer = run, s, model, optimizer
        self.run_id = run_id
        self.config, self.init, self.rank = config, init, rank
        self.last_saved = last_saved
        self.pending: int | None = None

    def save(self, iteration: int, path) -> None:
        if self.rank != 0:
            return
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update(optimizer_tensors(self.optimizer))
        extra = {"iteration": iteration, "settings": self.s.to_json(), "init": self.init, "time": time.time()}
        if self.run_id is not None:
            extra[RUN_ID_KEY] = self.run_id
        save_checkpoint(path, tensors, kind=TRAIN_STATE_KIND, config=self.config, extra=extra)

    def save_final(self, iteration: int) -> None:
        """The last iteration: no later loss can vouch for it; the parent is written anyway."""
        self.save(iteration, self.run.last_path)
        self.last_saved = iteration

    def save_pending(self, iteration: int) -> None:
        self.save(iteration, self.run.pending_last_path)
        self.pending = iteration

    def promote(self) -> None:
        """The pending state becomes last.safetensors."""
        if self.pending is None:
            return
        if self.rank == 0:
            os.replace(self.run.pending_last_path, self.run.last_path)
            os.replace(sidecar_path(self.run.pending_last_path), sidecar_path(self.run.last_path))
        self.last_saved, self.pending = self.pending, None

    def discard_pending(self) -> None:
        if self.rank == 0:
            for path in (self.run.pending_last_path, sidecar_path(self.run.pending_last_path)):
                path.unlink(missing_ok=True)


def _iterate(train_model: nn.Module, model: nn.Module, criterion, optimizer: torch.optim.Optimizer, dataset,
             s: TrainSettings, res: Resolved, states: _TrainingStates, *, start: int, device: torch.device,
             rank: int, world_size: int, reporter, on_iteration) -> dict[str, float]:
    """Iterations ``start``..``s.iters``: the losses of the last one (empty when none ran)."""
    from adaseg.data import collate

    run = states.run
    losses: dict[str, float] = {}
    # The progress task records "ok": false when training is interrupted or fails; it closes
    # after the unproven state is discarded.
    with progress_or_none(reporter, total=s.iters - start, description="train-parent", unit="it") as progress:
        try:
            for it in range(start, s.iters):
                seed_it = iteration_seed(s.seed, it)
                torch.manual_seed(seed_it)  # the loss's point sampling of this iteration
                dataset.reseed(seed_it)  # this iteration's augmentation
                # --batch-size is the global batch: the same images per iteration whatever the world size
                idx = batch_indices(len(dataset), s.batch_size, it, s.seed)[rank::world_size]
                batch = collate([dataset[i] for i in idx])
                pause = None
                if s.uses_pause:
                    pause = draw_pause(res.pause_layers, *s.pause_range, torch.Generator().manual_seed(seed_it))
                lr = set_lr(optimizer, s, it)
                images = batch["images"].to(device)
                mask = batch["padding_mask"].to(device)
                targets = [{k: v.to(device) for k, v in t.items()} for t in batch["targets"]]
                try:
                    with _autocast(device, s.amp):
                        out = train_model(images, mask, AdaptiveSettings(
                            pause=pause, record_exits=res.exits if s.uses_wsd else ()))
                    out_f = _float_outputs(out)
                    parts = criterion(out_f, targets, exit_weights=res.alphas if s.uses_wsd else None)
                    loss = parts["loss"]
                    bad = None if torch.isfinite(loss) else f"the loss is {float(loss)}"
                except NonFiniteError as exc:  # the matcher met NaN/inf outputs before a loss existed
                    bad = str(exc)
                if _any_rank(bad is not None, world_size, device):  # every rank stops together
                    raise _diverged(bad or "another rank's loss is not finite", it + 1, s, run, states.last_saved)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip)
                if not torch.isfinite(grad_norm):  # gradients are all-reduced: every rank agrees
                    raise _diverged(f"the gradient norm is {float(grad_norm)}", it + 1, s, run, states.last_saved)
                states.promote()  # the state before this step led to a finite loss and gradients
                optimizer.step()
                losses = {k: float(v.detach()) for k, v in parts.items()}
                done = it + 1
                if done == s.iters:
                    states.save_final(done)
                elif done % s.ckpt_every == 0:
                    states.save_pending(done)
                if progress is not None:
                    progress.update(loss=losses["loss"], lr=lr)
                if reporter is not None and (done % 10 == 0 or done == s.iters):
                    reporter.event("iteration", iteration=done, lr=lr, pause=str(pause) if pause else None, **losses)
                if on_iteration is not None:
                    on_iteration(done, losses)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # an interruption: Ctrl-C, SIGTERM (adaseg.utils.interrupt)
                states.promote()  # keep the progress: nothing says the pending state is bad
            raise
        finally:
            states.discard_pending()  # a diverged or failed run's unproven state (a promoted one is gone already)
    return losses


class TrainingDiverged(FloatingPointError):
    """The loss (or the gradients) became non-finite; the message says at which iteration,
    what was kept and what to try."""


def _any_rank(flag: bool, world_size: int, device: torch.device) -> bool:
    """``flag`` OR-ed over all ranks (one tiny all-reduce; just ``flag`` without torchrun)."""
    if world_size == 1:
        return flag
    import torch.distributed as dist

    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def _diverged(what: str, iteration: int, s: TrainSettings, run: RunDir, last_saved: int | None) -> TrainingDiverged:
    kept = (f"{run.last_path} still holds iteration {last_saved}" if last_saved is not None
            else "no training state was saved")
    return TrainingDiverged(
        f"train-parent: training diverged at iteration {iteration} of {s.iters} ({what}); stopped at once: "
        f"{kept} and no parent was written. Try a lower --lr (now {s.lr:g}) or --clip (now {s.clip:g}) in a new --run"
    )


def _float_outputs(out: Any) -> Any:
    # the losses are computed in float32 whatever autocast produced
    if isinstance(out, AdaptiveOutput):
        return out.to_float()
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):
        return {k: _float_outputs(v) for k, v in out.items()}
    if isinstance(out, list):
        return [_float_outputs(v) for v in out]
    return out


def _config_run_id(run: RunDir) -> str | None:
    """The run id in ``run``'s config.json (None: no config, or one written before run ids)."""
    if not run.config_path.is_file():
        return None
    try:
        value = run.read_config().get(RUN_ID_KEY)
    except RunDirError as exc:
        raise CheckpointError(str(exc)) from None
    return value if isinstance(value, str) else None


def check_state_identity(run: RunDir, meta) -> None:
    """Refuse a training state (``meta``: its header) that another run wrote: a state records
    the run id its run's config.json holds; ``--resume`` continues only the run's own training.
    A state written before run ids (none recorded) is accepted. Raises :class:`CheckpointError`."""
    state_id = meta.extra.get(RUN_ID_KEY)
    if state_id is None or not run.config_path.is_file():
        return
    config_id = _config_run_id(run)
    if config_id != state_id:
        mine = "records no run id" if config_id is None else f"is run {config_id[:12]}"
        raise CheckpointError(
            f"{run.last_path} is the training state of another run (run {str(state_id)[:12]}; {run.config_path} "
            f"{mine}): --resume continues only this run's own training; restore this run's state, or train "
            "again in a new --run")


def _resumed_run_id(run: RunDir) -> str | None:
    """The id a resumed run keeps: its config's (None for a run made before run ids)."""
    return _config_run_id(run)


def stored_settings(run: RunDir) -> TrainSettings:
    """The settings of the run whose training state is in ``run`` (for ``--resume``); a state
    of another run is refused (:func:`check_state_identity`)."""
    meta = read_checkpoint_meta(run.last_path, hint=recreate_hint(run.last_path))
    if meta.kind != TRAIN_STATE_KIND:
        raise CheckpointError(f"{run.last_path} is a {meta.kind!r} checkpoint, not a training state")
    check_state_identity(run, meta)
    return TrainSettings.from_json(meta.extra["settings"])


def resumed_iteration(run: RunDir) -> int:
    """The iteration the training state in ``run`` has reached (its header only)."""
    meta = read_checkpoint_meta(run.last_path, hint=recreate_hint(run.last_path))
    if meta.kind != TRAIN_STATE_KIND:
        raise CheckpointError(f"{run.last_path} is a {meta.kind!r} checkpoint, not a training state")
    return int(meta.extra["iteration"])


def check_resume_iters(run: RunDir, s: TrainSettings, done: int) -> None:
    """``--resume`` must leave something to do: ``s.iters`` beyond the ``done`` iterations of
    the state (else the loop would run 0 or a negative number of iterations and the parent
    would be rewritten claiming ``s.iters``). ``s.iters == done`` is allowed only while the
    parent is missing or fails verification (a run stopped between its last state and its
    parent, or a corrupted parent: resuming writes the parent from the state). Raises
    :class:`TrainSettingError` for ``--iters``."""
    if s.iters < done or (s.iters == done and _parent_intact(run)):
        raise TrainSettingError(
            "iters", f"--iters {s.iters} is not beyond the {done} iterations {run.last_path} already holds: "
            f"--resume trains on up to --iters, so pass --iters N with N > {done}"
        )


def _parent_intact(run: RunDir) -> bool:
    """Whether the run's parent exists and passes its content-hash and finiteness checks."""
    if not run.parent_path.is_file():
        return False
    try:
        load_checkpoint(run.parent_path, hint=recreate_hint(run.parent_path))
    except CheckpointError:
        return False
    return True
