"""``adaseg eval``: quality, GFLOPs per image and images/s of the run's parent on the val split,
with a gate (per-image exits), a fixed exit and/or a pause plan. Writes
``reports/eval_<name>.json`` and its per-image parts ``reports/eval_<name>.parts.safetensors``
into ``--run``; ``--bootstrap N`` adds 90% intervals of the report's own figures; ``--json``
prints the report."""

from __future__ import annotations

import click

from adaseg.cli.options import (device_option, json_option, pause_option, pause_output_option, quiet_option,
                                run_data_option, run_option, seed_option)
from adaseg.cli.numbers import at_most_max_bootstrap
from adaseg.cli.recipe_options import set_threads, threads_option
from adaseg.choices import PAUSE_MODES
from adaseg.cli.run_guard import writing_run

MIN_BOOTSTRAP = 100  # fewer resamples put a 5% tail on < 5 draws


@click.command(name="eval")
@click.option("--gate", "gate", default="auto", show_default=True, metavar="FILE|latest|auto|none|oracle",
              help="Gate picking each image's exit: a gate file, latest (most recently fitted), none (no gate), "
                   "auto: latest when the run has a gate and no --exit is given, else none; or oracle (with "
                   "--beta): each val image at its best exit under beta by `adaseg derive --split val` -- "
                   "the bound of any gate on this parent, evaluation only.")
@click.option("--beta", "beta", type=float, default=None,
              help="With --gate oracle: the trade-off of the oracle's exits, argmax_k (q_k - beta*layers_k).")
@click.option("--exit", "exit_", type=int, default=None, help="Fixed exit layer for every image (no gate).")
@pause_option
@click.option("--pause-mode", type=click.Choice(PAUSE_MODES), default="entropy", show_default=True,
              help="Which tokens pause: lowest auxiliary entropy (PAUMER) or random ones (its baseline).")
@pause_output_option
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per forward pass (quality and images/s).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N val images.")
@click.option("--flops-images", type=click.IntRange(min=1), default=None,
              help="Count FLOPs on the first N val images [default: all evaluated].")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True, help="Untimed batches.")
@click.option("--timed", type=click.IntRange(min=1), default=10, show_default=True, help="Timed batches.")
@click.option("--name", default=None, help="Report name [default: from the settings].")
@click.option("--bootstrap", "n_boot", type=int, default=0, show_default=True, metavar="N",
              callback=at_most_max_bootstrap,
              help="Add 90% bootstrap intervals of the figures over N resamples of the images (seed 0; "
                   "0 = off, else at least 100).")
@run_data_option
@device_option
@seed_option
@threads_option
@run_option
@click.option("--parent", "parent", default=None, metavar="CHECKPOINT", type=click.Path(dir_okay=False),
              help="Evaluate this model checkpoint (a parent, an imported model) instead of a run's parent; needs "
                   "--data. Writes nothing unless --out.")
@click.option("--out", "out", default=None, metavar="DIR", type=click.Path(file_okay=False),
              help="With --parent: write the report into DIR/reports/ (and DIR/log.jsonl).")
@click.option("--cuda-graph", "cuda_graph", is_flag=True, default=False,
              help="Run the adaptive encoder as CUDA graphs at these settings (a CUDA device; batches "
                   "with padding run eagerly; FLOPs are counted eagerly).")
@quiet_option
@json_option
def eval_cmd(gate, beta, exit_, pause, pause_mode, pause_output, batch_size, limit, flops_images, warmup, timed, name, n_boot, data,
             device, seed, threads, run, parent, out, cuda_graph, quiet, as_json):
    """Score the run's parent on the val split: PQ/mIoU/AP, GFLOPs, images/s."""
    import json

    from adaseg.data import DataError
    from adaseg.engine import evaluate as ev
    from adaseg.storage.checkpoint import CheckpointError
    from adaseg.utils.distributed import distributed_session
    from adaseg.runs.gate_file import GateChoiceError, choose_gate
    from adaseg.utils.progress import JsonlLog, Reporter
    from adaseg.runs.run_dir import MissingStepError, RunDir, RunDirError

    set_threads(threads)
    _refuse_idle_options(pause, pause_mode, pause_output)
    if cuda_graph:
        _check_cuda_graph(gate, exit_, pause, pause_mode, pause_output, device)
    if n_boot != 0 and n_boot < MIN_BOOTSTRAP:
        raise click.BadParameter(f"{n_boot} resamples cannot give a 90% interval: use 0 (off) or at least "
                                 f"{MIN_BOOTSTRAP}", param_hint="'--bootstrap'")
    from adaseg.cli.checkpoint_target import open_target, refuse_untrained

    oracle_beta = _oracle_beta(gate, beta, exit_, parent)
    run_dir = open_target(run, parent, data, out)  # a checkpoint: its "own" dataset is --data
    try:
        run_dir.require("config", "parent")
        gate_path = None if oracle_beta is not None else choose_gate(run_dir, gate, exit=exit_)
        refuse_untrained(run_dir, pause, pause_mode)
    except GateChoiceError as exc:
        raise click.UsageError(str(exc)) from None
    except (MissingStepError, RunDirError, CheckpointError) as exc:
        raise click.ClickException(str(exc)) from None
    settings = ev.EvalSettings(gate=None if gate_path is None else str(gate_path), exit=exit_, pause=pause,
                               pause_mode=pause_mode, pause_output=pause_output, batch_size=batch_size, limit=limit, flops_images=flops_images,
                               warmup=warmup, timed=timed, seed=seed, data=None if parent else data,
                               oracle_beta=oracle_beta, cuda_graph=cuda_graph)
    writes = getattr(run_dir, "writes", True)  # --parent without --out writes nothing
    report_name = name or settings.name()
    try:
        report_path = run_dir.check_report_slot(report_name)  # a folder or link there is refused
    except RunDirError as exc:
        raise click.BadParameter(str(exc), param_hint="'--name'") from None

    import contextlib

    guard = writing_run(run_dir, command="eval", dirs=[run_dir.reports_dir]) if writes else contextlib.nullcontext()
    with guard, distributed_session(device) as dist_info:
        reporter = Reporter(quiet=quiet or as_json, log=JsonlLog(run_dir.log_path, command="eval") if writes else None,
                            enabled=dist_info.is_main)
        try:  # every refusal (model-dependent ones too) before the log records a start
            prepared = ev.prepare(run_dir, settings, device=dist_info.device)
        except ev.EvalSettingError as exc:
            raise click.BadParameter(str(exc), param_hint=f"'--{exc.param}'") from None
        except (CheckpointError, DataError, MissingStepError, RunDirError) as exc:
            raise click.ClickException(str(exc)) from None
        if name is None and prepared.sizes_vary:  # images of several sizes: the batch size enters the name
            report_name = settings.name(sizes_vary=True)
            try:
                report_path = run_dir.check_report_slot(report_name)
            except RunDirError as exc:
                raise click.BadParameter(str(exc), param_hint="'--name'") from None
        reporter.event("start", run=str(run_dir.root), name=report_name, gate=settings.gate, exit=exit_,
                       pause=None if pause is None else str(pause), pause_mode=pause_mode, pause_output=pause_output,
                       batch_size=batch_size)
        try:
            report = ev.evaluate(run_dir, settings, device=dist_info.device, reporter=reporter, prepared=prepared)
        except ev.EvalSettingError as exc:
            raise click.BadParameter(str(exc), param_hint=f"'--{exc.param}'") from None
        except (CheckpointError, DataError, MissingStepError, RunDirError) as exc:
            raise click.ClickException(str(exc)) from None
        if report is None:
            return
        if n_boot:
            from adaseg.eval.bootstrap import BootstrapMemoryError

            try:
                ev.add_intervals(report, n_boot=n_boot)
            except BootstrapMemoryError as exc:
                raise click.BadParameter(str(exc), param_hint="'--bootstrap'") from None
        if writes:
            ev.save_report(run_dir, report_name, report)
        else:
            report.settings["name"] = report_name
        data = report.to_json()
        reporter.event("done", report=str(report_path), metrics={k: v for k, v in report.metrics.items()
                                                                 if not isinstance(v, dict)})
        if as_json:
            click.echo(json.dumps(data, sort_keys=True))
            return
        reporter.print(report_table(data))
        reporter.info(f"eval: {data['settings']['images']} val images in {data['info']['seconds']:.0f} s; "
                      + (f"wrote {report_path}" if writes else "wrote nothing (--out DIR keeps the report)"))


def _oracle_beta(gate: str, beta: float | None, exit_: int | None, parent) -> float | None:
    """``--beta`` of ``--gate oracle`` (None for any other gate); each misuse is one line."""
    import math

    if gate != "oracle":
        if beta is not None:
            raise click.UsageError("--beta sets the oracle gate's trade-off: it needs --gate oracle "
                                   "(a fitted gate's beta is in its file; fit one with `adaseg fit-gate --beta B`)")
        return None
    if beta is None:
        raise click.UsageError("--gate oracle needs --beta B (e.g. --beta 0.0005)")
    if not math.isfinite(beta) or beta < 0:
        raise click.BadParameter(f"{beta!r}: must be a finite number >= 0", param_hint="'--beta'")
    if exit_ is not None:
        raise click.UsageError("--gate oracle picks each image's exit: it excludes --exit")
    if parent is not None:
        raise click.UsageError("--gate oracle reads a run's val Step B (`adaseg derive --split val`): use --run, "
                               "not --parent")
    return float(beta)


def _check_cuda_graph(gate, exit_, pause, pause_mode, pause_output, device) -> None:
    """--cuda-graph: one error line unless the encoder can be captured at these settings here."""
    from adaseg.models.adaptive.cuda_graph import check_graphable
    from adaseg.models.adaptive.settings import AdaptiveSettings

    if gate == "oracle":
        raise click.BadParameter("the oracle gate gives every image its own exit; a CUDA graph takes a fixed "
                                 "exit or a trained gate", param_hint="'--cuda-graph'")
    try:
        check_graphable(AdaptiveSettings(exits=exit_, pause=pause, pause_mode=pause_mode, pause_output=pause_output),
                        device)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--cuda-graph'") from None


def _refuse_idle_options(pause, pause_mode: str, pause_output: str = "decoder") -> None:
    """A setting given on the command line that cannot change anything is an error, not silently
    recorded: ``--pause-mode`` without ``--pause``, ``--seed`` without random pausing (the
    only thing eval draws)."""
    from adaseg.cli.options import given_on_command_line

    ctx = click.get_current_context()

    def given(name: str) -> bool:
        return given_on_command_line(ctx, name)

    if given("pause_mode") and pause is None:
        raise click.UsageError("--pause-mode chooses which tokens pause: it needs --pause (e.g. --pause 3:0.4,5:0.3)")
    if pause_output != "decoder" and pause is None:
        raise click.UsageError(f"--pause-output {pause_output} labels paused tokens by their auxiliary decoder: "
                               "it needs --pause (e.g. --pause 3:0.4,5:0.3)")
    if given("seed") and (pause is None or pause_mode != "random"):
        raise click.UsageError("--seed seeds random pausing only: it needs --pause ... --pause-mode random")


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def describe(settings: dict) -> str:
    """One line naming what was evaluated."""
    if settings.get("oracle_beta") is not None:
        what = f"oracle gate beta={settings['oracle_beta']} (val Step B; a bound, not a gate)"
    elif settings.get("gate"):
        g = settings.get("gate_settings") or {}
        what = f"gate beta={g.get('beta')} K={g.get('K')}"
    elif settings.get("exit"):
        what = f"exit {settings['exit']}"
    else:
        what = "full depth"
    if settings.get("pause"):
        what += f" + pause {settings['pause']} ({settings['pause_mode']})"
        if settings.get("pause_output", "decoder") != "decoder":
            what += ", early exit: paused tokens labelled by their auxiliary decoder"
    return what


def _interval(intervals: dict | None, key: str, scale: float = 100.0, digits: int = 2) -> str:
    iv = (intervals or {}).get("metrics", {}).get(key)
    if not iv or iv.get("lo") is None:
        return "-"
    return f"[{scale * iv['lo']:.{digits}f}, {scale * iv['hi']:.{digits}f}]"


def report_table(data: dict):
    """The rich table of one report (with a column of bootstrap intervals when it has them)."""
    from rich.table import Table

    m, g, t, ex = data["metrics"], data["gflops"], data["throughput"], data["exits"]
    intervals = data.get("intervals")
    table = Table(title=f"adaseg eval: {describe(data['settings'])} on {data['info']['data']} val "
                        f"({data['settings']['images']} images)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if intervals:
        table.add_column(f"{100 * intervals['level']:.0f}% interval ({intervals['n_boot']} resamples)", justify="right")

    def row(label: str, value: str, key: str | None = None, scale: float = 100.0, digits: int = 2) -> None:
        cells = [label, value]
        if intervals:
            cells.append(_interval(intervals, key, scale, digits) if key else "")
        table.add_row(*cells)

    if "PQ" in m:
        for key in ("PQ", "SQ", "RQ", "PQ_th", "PQ_st"):
            row(key, _pct(m.get(key)), key)
    if "mIoU" in m:
        row("mIoU", _pct(m.get("mIoU")), "mIoU")
    if "AP" in m:
        row("AP (masks)", _pct(m.get("AP")), "AP")
    if "AP_box" in m:  # a detection model (DETR); AP_S/M/L have no per-image recomputation, no interval
        for key in ("AP_box", "AP50_box", "AP75_box", "APs_box", "APm_box", "APl_box"):
            row(key, _pct(m.get(key)), key if key in ("AP_box", "AP50_box", "AP75_box") else None)
    row("GFLOPs total (mean ± std / image)", f"{g['gflops']['total']['mean']:.3f} ± {g['gflops']['total']['std']:.3f}",
        "gflops_total_mean", 1.0, 3)
    row("GFLOPs encoder (mean ± std / image)",
        f"{g['gflops']['encoder']['mean']:.3f} ± {g['gflops']['encoder']['std']:.3f}", "gflops_encoder_mean", 1.0, 3)
    row("encoder layers (mean over images)", f"{ex['mean']:.2f} of {ex['depth']}", "exit_mean", 1.0, 2)
    row("exits used", " ".join(f"{k}:{v}" for k, v in ex["histogram"].items()))
    row(f"images/s (batch {t['batch_size']}, {t['device']})", f"{t['images_per_s']:.1f}")
    return table
