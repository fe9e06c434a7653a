"""Step B: the derived dataset -- per training image and exit, the parent's quality.

The parent runs on the **training** split with the evaluation transform (no augmentation),
every exit from one encoder pass (``record_exits``: shared layers are computed once, the
shared decoder runs per exit). For each image and exit it records the quality of the suite's
quality evaluator (:mod:`adaseg.eval.tasks`: per-image PQ with panopticapi's rules for
panoptic models on panoptic data, per-image mIoU otherwise), its per-class parts, and once per image the gate's input features: the paper's pooled backbone tokens and, where the
parent provides them (``model.exit2_refusal()`` is None; otherwise the reason is recorded in
``info["exit2_refusal"]``), the exit-2 gate's input (the encoder's tokens after layer 2 pooled
per level), from the same encoder pass (``AdaptiveSettings(record_features=True)``). Images whose quality is
undefined (empty ground truth and empty prediction) are recorded as NaN, never divided by
zero. Under ``torchrun`` each rank scores a strided shard; rank 0 gathers them in dataset
order and writes ``derived.safetensors`` through :class:`adaseg.runs.derived.DerivedDataset`.

``split="val"`` scores the **val** images instead and writes ``derived_val.safetensors``
(:func:`adaseg.runs.derived.val_derived_path`) beside it: the oracle gate's input
(``adaseg eval --gate oracle --beta B``), evaluation only -- fit-gate reads only
``derived.safetensors``, so a gate is never fitted on val images.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from adaseg.runs.derived import DerivedDataset, best_exit_histogram, stack_parts, val_derived_path
from adaseg.utils.distributed import gather_in_order, shard_indices
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.runs.parent import load_parent
from adaseg.utils.progress import progress_or_none
from adaseg.runs.run_dir import RunDir
from adaseg.eval.scoring import Scorer
from adaseg.eval.tasks.registry import suite_for


@dataclass
class DeriveResult:
    derived: DerivedDataset | None  # None on ranks other than 0
    seconds: float
    path: str | None


def score_exits(model, batch, scorer: Scorer, indices: list[int], device) -> list[dict]:
    """Run ``model`` at every exit on one batch; per image ``{"quality": [E], "parts": [(col,
    class, values)], "features": [C], "exit2": [F] or None}`` by the suite's quality evaluator
    (``exit2``: the exit-2 gate's input, where ``model.exit2_refusal()`` is None)."""
    images = batch["images"].to(device)
    mask = batch["padding_mask"].to(device)
    record = model.exit2_refusal() is None
    with torch.no_grad():
        out = model(images, mask, AdaptiveSettings(record_exits=model.exits, record_features=record))
    exits = list(model.exits)
    per_image = [{"quality": [], "parts": [], "features": out.gate_features[j].float().cpu().tolist(),
                  "exit2": out.layer_features[j].float().cpu().tolist() if record else None}
                 for j in range(len(indices))]
    evaluator = scorer.suite.quality
    for col, k in enumerate(exits):
        preds = evaluator.predict(model, out.at_exit(k), batch)
        for j, (index, pred) in enumerate(zip(indices, preds)):
            q, parts = evaluator.image_quality(scorer, batch, j, index, pred)
            per_image[j]["quality"].append(q)
            per_image[j]["parts"].extend((col, cls, vals) for cls, vals in parts)
    return per_image


def derive(
    run: RunDir,
    *,
    device: torch.device,
    batch_size: int = 8,
    limit: int | None = None,
    data: str | None = None,
    split: str = "train",
    reporter=None,
) -> DeriveResult:
    """Step B into ``run`` (needs config and parent; see the module docstring).

    Args:
        batch_size: images per forward pass.
        limit: score only the first ``limit`` training images (None: all).
        data: a ``--data`` spec whose training split to score instead of the run's own
            dataset; refused (DataError) unless its categories are the run's.
        split: ``"train"`` (Step B, ``derived.safetensors``) or ``"val"`` (the oracle's
            input, ``derived_val.safetensors``; never read by fit-gate).
    """
    from adaseg.data import collate
    from adaseg.runs.run_data import build_run_dataset

    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    run.require("config", "parent")
    config = run.read_config()
    model, info = load_parent(run.parent_path, device=device)
    dataset, data_spec = build_run_dataset(config, data, split)
    scorer = Scorer(dataset, metric=suite_for(model.task, dataset.meta.task).metric)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    mine = shard_indices(n)
    t0 = time.perf_counter()
    results: list[dict] = []
    # The progress task records "ok": false when the loop is interrupted or fails.
    with progress_or_none(reporter, total=len(mine), description="derive", unit="img") as progress:
        for start in range(0, len(mine), batch_size):
            idx = mine[start : start + batch_size]
            batch = collate([dataset[i] for i in idx])
            part = score_exits(model, batch, scorer, idx, device)
            results.extend(part)
            if progress is not None:
                mean_full = [r["quality"][-1] for r in part if not math.isnan(r["quality"][-1])]
                progress.update(len(idx), **({"q_full": sum(mean_full) / len(mean_full)} if mean_full else {}))
    gathered = gather_in_order(mine, results)
    if gathered is None:
        return DeriveResult(derived=None, seconds=time.perf_counter() - t0, path=None)
    rows = [(i, col, cls, vals) for i, r in enumerate(gathered) for col, cls, vals in r["parts"]]
    refusal = model.exit2_refusal()
    parts_index, parts_values = stack_parts(rows, len(scorer.suite.quality.part_names))
    derived = DerivedDataset(
        exits=list(model.exits),
        quality=torch.tensor([r["quality"] for r in gathered], dtype=torch.float64),
        features=torch.tensor([r["features"] for r in gathered], dtype=torch.float32),
        metric=scorer.metric,
        depth=int(model.depth),
        parent_fingerprint=info["fingerprint"],
        image_ids=[str(dataset.records[i].image_id) for i in range(n)],
        parts_index=parts_index,
        parts_values=parts_values,
        info={"data": data_spec, "split": split, "model": info["model"], "images": n,
              "seconds": time.perf_counter() - t0, **({"exit2_refusal": refusal} if refusal else {})},
        exit2_features=None if refusal else torch.tensor([r["exit2"] for r in gathered], dtype=torch.float32),
    )
    path = run.derived_path if split == "train" else val_derived_path(run)
    derived.save(path)
    return DeriveResult(derived=derived, seconds=time.perf_counter() - t0, path=str(path))


def histogram_rows(derived: DerivedDataset) -> list[tuple[str, int, float]]:
    """``(best exit, images, share)`` rows of the paper's Fig. 2 (ties to the earliest exit)."""
    hist = best_exit_histogram(derived)
    n = max(derived.num_images, 1)
    return [(k, v, v / n) for k, v in hist.items()]
