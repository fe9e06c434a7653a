"""Step C: fit the gate on the derived dataset's cached features (seconds, not hours).

The gate (:class:`adaseg.models.adaptive.gate.Gate`) is one linear layer ``Linear(C, E)`` on the pooled lowest-resolution tokens
(Eq. 6); its E outputs are the exits ``<= K`` of the derived dataset. Training is on the
cached features only: targets and losses are in :mod:`adaseg.engine.gate_targets`.
``features="exit2"`` fits the same layer on the derived dataset's exit-2 features (the
encoder's tokens after layer 2 pooled per level, ``Linear(L * C, E)``): the gate file
records it, and the model then decides each image's exit after layer 2.

Features are standardised for training (zero mean, unit variance per channel: the
problem is then well conditioned for Adam whatever the features' scale) and the
standardisation is folded back into the layer, so the saved ``weight``/``bias`` apply to the
raw features the model computes at inference: ``W = W_s / sigma``, ``b = b_s - W_s mu / sigma``.
The layer starts at zero: hard-CE, u-CE and soft-CE on a linear layer are convex, so the
start does not matter and zero makes the fit depend on the seed only through the batch order.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from adaseg.storage.checkpoint import save_checkpoint
from adaseg.runs.derived import DerivedDataset, DerivedDatasetError, gate_inputs
from adaseg.engine.gate_targets import LOSSES, TEMPERATURE_LOSSES, gate_loss, prepare_quality, targets, utility
from adaseg.runs.gate_file import GATE_KIND, load_gate, resolve_gate  # noqa: F401 - re-exported
from adaseg.runs.run_dir import RunDir



class GateSettingError(ValueError):
    """A Step C setting is invalid; ``param`` names the option (``beta``, ``K``, ...)."""

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


@dataclass
class GateFit:
    """A fitted gate and what it does on the training set.

    ``weight`` (E, C) and ``bias`` (E,) act on raw gate features; ``exits`` (E) are the
    encoder layers its outputs stand for. Costs are in encoder layers; ``*_relative`` divide
    by the parent's full depth.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    exits: list[int]
    beta: float
    K: int
    loss: str
    temperature: float | None
    depth: int
    num_images: int
    num_excluded: int
    target_counts: dict[int, int]
    gate_counts: dict[int, int]
    target_cost_layers: float
    gate_cost_layers: float
    train_accuracy: float
    quality_at_targets: float
    quality_at_gate: float
    quality_at_full: float
    loss_history: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    features: str = "backbone"

    @property
    def target_cost_relative(self) -> float:
        return self.target_cost_layers / self.depth

    @property
    def gate_cost_relative(self) -> float:
        return self.gate_cost_layers / self.depth

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts (no tensors)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("weight", "bias")}
        if self.features == "backbone":  # the paper's gate: its record as before --features existed
            del out["features"]
        out["target_counts"] = {str(k): v for k, v in self.target_counts.items()}
        out["gate_counts"] = {str(k): v for k, v in self.gate_counts.items()}
        out["target_cost_relative"] = self.target_cost_relative
        out["gate_cost_relative"] = self.gate_cost_relative
        return out


def resolve_settings(
    derived: DerivedDataset, *, beta: float, K: int | None, loss: str, temperature: float | None,
    features: str = "backbone", run_hint: str = "adaseg derive",
) -> tuple[int, float | None]:
    """Check Step C's settings against the derived dataset; return ``(K, temperature)``.

    Raises :class:`GateSettingError` with one line naming the option and value; exit-2
    features the derived dataset lacks (an older file: ``run_hint`` says what to run) or the
    parent cannot provide are refused for ``features``.
    """
    try:
        gate_inputs(derived, features, run_hint=run_hint)
    except DerivedDatasetError as exc:
        raise GateSettingError("features", str(exc)) from None
    if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
        raise GateSettingError("beta", f"--beta must be a finite number >= 0, got {beta!r}")
    if loss not in LOSSES:
        raise GateSettingError("loss", f"--loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    exits = derived.exit_list
    if K is None:
        K = derived.depth
    if K > derived.depth:
        raise GateSettingError("K", f"--K {K} is larger than the parent's encoder depth {derived.depth}")
    if K < exits[0]:
        raise GateSettingError("K", f"--K {K} is below the smallest exit ({exits[0]}) of the derived dataset {exits}")
    if loss in TEMPERATURE_LOSSES:
        temperature = 1.0 if temperature is None else temperature
        if not (math.isfinite(temperature) and temperature > 0):
            raise GateSettingError("temperature", f"--temperature must be > 0, got {temperature!r}")
    elif temperature is not None:
        raise GateSettingError("temperature", f"--temperature applies to {' and '.join(TEMPERATURE_LOSSES)} only, not {loss}")
    return K, temperature


def fit_gate(
    derived: DerivedDataset,
    *,
    beta: float,
    K: int | None = None,
    loss: str = "hard-ce",
    temperature: float | None = None,
    epochs: int = 100,
    lr: float = 1e-2,
    batch_size: int = 256,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
    features: str = "backbone",
) -> GateFit:
    """Fit the gate for one (beta, K, loss) on ``derived``; see the module docstring.

    Args:
        derived: Step B's dataset: quality (N, E_all), features (N, C).
        beta: trade-off of Eq. 4 (>= 0).
        K: largest exit the gate may choose (default: the parent's depth).
        loss: one of ``hard-ce``, ``u-ce``, ``soft-ce``, ``soft-mse``.
        temperature: soft targets' T (soft-ce, soft-mse only; default 1 as in the paper).
        epochs, lr, batch_size, seed: Adam on mini-batches, shuffled by ``seed``.
        on_epoch: called with (epoch index, mean loss) after every epoch.
        features: the gate's input: ``"backbone"`` (the paper's, ``derived.features``) or
            ``"exit2"`` (``derived.exit2_features``; refused where the derived dataset has none).
    """
    K, temperature = resolve_settings(derived, beta=beta, K=K, loss=loss, temperature=temperature, features=features)
    inputs = gate_inputs(derived, features, run_hint="adaseg derive")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise GateSettingError("epochs", f"need epochs >= 1, batch size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    cols = [j for j, e in enumerate(derived.exit_list) if e <= K]
    exits = torch.tensor([derived.exit_list[j] for j in cols], dtype=torch.long)
    q, keep = prepare_quality(derived.quality[:, cols])
    x = inputs[keep].to(torch.float64)
    n, c = x.shape
    if n == 0:
        raise GateSettingError("derived", "every image of the derived dataset has undefined quality: nothing to train on")

    u = utility(q, exits, beta)
    t = targets(q, exits, beta)
    mu = x.mean(0)
    sigma = x.std(0, unbiased=False).clamp_min(1e-6)
    xs = (x - mu) / sigma

    e = len(cols)
    with _single_thread():
        weight, bias, history = _train(xs, u, t, e, loss=loss, temperature=temperature or 1.0, epochs=epochs,
                                       lr=lr, batch_size=batch_size, seed=seed, on_epoch=on_epoch)

    with torch.no_grad():
        w_raw = (weight / sigma[None, :]).to(torch.float32)
        b_raw = (bias - (weight * (mu / sigma)[None, :]).sum(1)).to(torch.float32)
        # predict exactly as the float32 Gate module will (nn.Linear on the raw features)
        pred = torch.nn.functional.linear(inputs[keep], w_raw, b_raw).argmax(1)
    rows = torch.arange(n)
    exit_list = exits.tolist()
    return GateFit(
        weight=w_raw,
        bias=b_raw,
        exits=exit_list,
        beta=float(beta),
        K=K,
        loss=loss,
        temperature=temperature,
        depth=derived.depth,
        num_images=n,
        num_excluded=int((~keep).sum()),
        target_counts={ex: int((t == j).sum()) for j, ex in enumerate(exit_list)},
        gate_counts={ex: int((pred == j).sum()) for j, ex in enumerate(exit_list)},
        target_cost_layers=float(exits[t].double().mean()),
        gate_cost_layers=float(exits[pred].double().mean()),
        train_accuracy=float((pred == t).double().mean()),
        quality_at_targets=float(q[rows, t].mean()),
        quality_at_gate=float(q[rows, pred].mean()),
        quality_at_full=float(q[:, -1].mean()),
        loss_history=history,
        settings={"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed},
        features=features,
    )


@contextlib.contextmanager
def _single_thread():
    # The steps are tiny (a (B, C) x (C, E) matmul): intra-op threads only add synchronisation,
    # which on a busy machine costs 50x (measured: 60 steps 2.8 s with 2 threads, 0.06 s with 1).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(xs, u, t, e, *, loss, temperature, epochs, lr, batch_size, seed, on_epoch):
    """Adam on mini-batches of standardised features xs (N, C); returns (weight, bias, history)."""
    n, c = xs.shape
    weight = torch.zeros(e, c, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(e, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            logits = xs[idx] @ weight.T + bias
            value = gate_loss(logits, loss=loss, u=u[idx], target=t[idx], temperature=temperature)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            total += float(value.detach()) * len(idx)
        history.append(total / n)
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    return weight.detach(), bias.detach(), history


# --------------------------------------------------------------------------------------
# Gate files
# --------------------------------------------------------------------------------------


def gate_module(fit: GateFit):
    """The fitted weights in :class:`adaseg.models.adaptive.gate.Gate` (what the model uses at inference)."""
    from adaseg.models.adaptive.gate import Gate

    gate = Gate(in_channels=int(fit.weight.shape[1]), exits=tuple(fit.exits), features=fit.features)
    with torch.no_grad():
        gate.linear.weight.copy_(fit.weight)
        gate.linear.bias.copy_(fit.bias)
    return gate


def save_gate(run: RunDir, fit: GateFit, derived: DerivedDataset) -> Path:
    """Write the gate to ``run.gate_path(...)`` atomically (replacing a gate of the same settings).

    The tensors are :class:`adaseg.models.adaptive.gate.Gate`'s state dict and ``config`` its
    constructor arguments, so ``load_into(Gate(**config), path)`` rebuilds it. The file records
    the parent's fingerprint, so a gate fitted for another parent is refused by :func:`load_gate`.
    """
    path = run.gate_path(beta=fit.beta, K=fit.K, loss=fit.loss, temperature=fit.temperature, features=fit.features)
    gate = gate_module(fit)
    extra = fit.summary()
    extra.update(
        parent_fingerprint=derived.parent_fingerprint,
        derived_fingerprint=derived.fingerprint(),
        created=time.time(),
    )
    config = {"in_channels": gate.in_channels, "exits": list(gate.exits)}
    if fit.features != "backbone":  # (the paper's gate's config as before --features existed)
        config["features"] = fit.features
    save_checkpoint(path, gate.state_dict(), kind=GATE_KIND, config=config, extra=extra)
    return path
