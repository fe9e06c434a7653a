"""``adaseg fit-gate``: Step C, the gate for one trade-off, on the derived dataset's cached
features (seconds). Reads the run directory's derived dataset (and parent, to check it is
the same parent); writes ``gates/gate_beta{B}_K{K}_{loss}.safetensors`` (+ ``.json``;
``..._exit2.safetensors`` with ``--features exit2``)."""

from __future__ import annotations

import click

from adaseg.cli.numbers import FiniteFloat
from adaseg.cli.options import json_option, quiet_option, run_option, seed_option
from adaseg.cli.run_guard import writing_run

# Mirrors adaseg.engine.gate_targets.LOSSES (kept literal so `adaseg --help` does not import
# torch); a test checks the two agree.
LOSS_CHOICES = ("hard-ce", "u-ce", "soft-ce", "soft-mse")
# Mirrors adaseg.models.adaptive.deferred.GATE_FEATURES (same reason; the same test checks it).
FEATURE_CHOICES = ("backbone", "exit2")


@click.command(name="fit-gate")
@click.option("--beta", type=float, required=True,
              help="Trade-off: targets are argmax_k (q_k - beta*k); larger beta, earlier exits. Paper: 0.0005 (COCO).")
@click.option("--K", "K", type=int, default=None,
              help="Largest exit the gate may choose (default: the parent's encoder depth).")
@click.option("--loss", type=click.Choice(LOSS_CHOICES), default="hard-ce", show_default=True,
              help="Gate loss (paper, Table T2); hard-ce is the paper's choice.")
@click.option("--temperature", type=FiniteFloat(), default=None,
              help="Temperature of soft-ce/soft-mse targets softmax(u/T) (default 1, as in the paper).")
@click.option("--features", type=click.Choice(FEATURE_CHOICES), default="backbone", show_default=True,
              help="The gate's input: backbone (the paper's pooled backbone tokens; the exit is decided before "
                   "layer 1) or exit2 (the encoder's tokens after layer 2 pooled per level; the exit is decided "
                   "after layer 2, which every image runs). exit2 needs a derived dataset that records them "
                   "(adaseg derive since --features existed) and a parent that provides them.")
@click.option("--epochs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=1e-2, show_default=True,
              help="Adam learning rate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@seed_option
@run_option
@quiet_option
@json_option
def fit_gate(beta, K, loss, temperature, features, epochs, lr, batch_size, seed, run, quiet, as_json):
    """Step C: fit the gate for one trade-off (beta, K) on the derived dataset."""
    import json
    import math

    from adaseg.storage.checkpoint import CheckpointError
    from adaseg.runs.derived import DerivedDatasetError, load_run_derived
    from adaseg.engine.fit_gate import GateSettingError, fit_gate as fit, resolve_settings, save_gate
    from adaseg.utils.progress import Reporter
    from adaseg.runs.run_dir import MissingStepError, RunDir, RunDirError

    if not math.isfinite(beta) or beta < 0:
        raise click.BadParameter(f"{beta!r}: must be a finite number >= 0", param_hint="'--beta'")
    run_dir = RunDir(run)
    try:
        run_dir.require("parent", "derived")
    except MissingStepError as exc:
        raise click.ClickException(str(exc)) from None
    with writing_run(run_dir, command="fit-gate", dirs=[run_dir.gates_dir]):
        try:
            derived = load_run_derived(run_dir, check_parent=True)
        except (MissingStepError, RunDirError, DerivedDatasetError, CheckpointError) as exc:
            raise click.ClickException(str(exc)) from None
        try:
            K, temperature = resolve_settings(derived, beta=beta, K=K, loss=loss, temperature=temperature,
                                              features=features, run_hint=f"adaseg derive --run {run_dir.root}")
        except GateSettingError as exc:
            raise click.BadParameter(str(exc), param_hint=f"'--{exc.param}'") from None

        # Everything is validated: from here on the run directory is written.
        reporter = Reporter.for_run(run_dir, command="fit-gate", quiet=quiet or as_json)
        settings = dict(beta=beta, K=K, loss=loss, temperature=temperature, epochs=epochs, lr=lr,
                        batch_size=batch_size, seed=seed, features=features)
        reporter.event("start", run=str(run_dir.root), **settings)
        with reporter.progress(total=epochs, description="fit-gate", unit="epoch") as progress:
            try:
                result = fit(derived, **settings, on_epoch=lambda _, value: progress.update(loss=value))
            except GateSettingError as exc:
                raise click.ClickException(str(exc)) from None
        try:
            path = save_gate(run_dir, result, derived)
        except CheckpointError as exc:  # e.g. a gate whose fit diverged to NaN is not written
            raise click.ClickException(str(exc)) from None
        summary = result.summary()
        summary["path"] = str(path)
        reporter.event("done", **summary)
        if as_json:
            click.echo(json.dumps(summary, sort_keys=True))
            return
        _print_tables(reporter, result, path)


def _print_tables(reporter, result, path) -> None:
    from rich.table import Table

    n = result.num_images
    from adaseg.exact import exact_float

    table = Table(title=f"Gate targets on the training set (beta={exact_float(result.beta)}, K={result.K}, "
                        f"{result.loss})")
    table.add_column("exit (layers)", justify="right")
    table.add_column("targets", justify="right")
    table.add_column("share", justify="right")
    table.add_column("gate picks", justify="right")
    for ex in result.exits:
        t, g = result.target_counts[ex], result.gate_counts[ex]
        table.add_row(str(ex), str(t), f"{100.0 * t / n:.1f}%", str(g))
    reporter.print(table)

    cost = Table(title="Expected encoder cost on the training set")
    cost.add_column("")
    cost.add_column("layers", justify="right")
    cost.add_column(f"of full depth ({result.depth})", justify="right")
    cost.add_column("mean quality", justify="right")
    cost.add_row("targets", f"{result.target_cost_layers:.3f}", f"{100 * result.target_cost_relative:.1f}%",
                 f"{result.quality_at_targets:.4f}")
    cost.add_row("fitted gate", f"{result.gate_cost_layers:.3f}", f"{100 * result.gate_cost_relative:.1f}%",
                 f"{result.quality_at_gate:.4f}")
    cost.add_row(f"always exit {result.exits[-1]}", f"{result.exits[-1]:.3f}",
                 f"{100 * result.exits[-1] / result.depth:.1f}%", f"{result.quality_at_full:.4f}")
    reporter.print(cost)
    reporter.info(
        f"{n} images ({result.num_excluded} excluded: quality undefined at every exit); "
        f"gate agrees with its targets on {100 * result.train_accuracy:.1f}%; wrote {path}"
    )
