"""Helpers for the end-to-end recipe tests: a tiny synthetic folder and CLI invocation."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from adaseg.cli.main import main

# Tiny everything: 64 px images (the encoder's coarsest level is 2x2), 8 train and 4 val images.
SYNTH = dict(n_train=8, n_val=4, size=64, seed=0)
TRAIN_FAST = ["--iters", "2", "--batch-size", "2", "--init", "none", "--threads", "1"]


def write_folder(path: Path) -> str:
    from adaseg.data.synthetic.generate import write_synthetic

    return write_synthetic(str(path), workers=1, **SYNTH)


def trained_run(root: Path, folder: str, *, gate_args=("--beta", "0.0005", "--epochs", "2")):
    """A finished 2-iteration parent at ``root`` (``--recipe standard``), its derived dataset and,
    unless ``gate_args`` is None, a gate fitted with ``gate_args``; returns its RunDir."""
    from adaseg.runs.run_dir import RunDir

    invoke_json("train-parent", "--data", folder, *TRAIN_FAST, "--recipe", "standard", "--run", root)
    invoke_json("derive", "--run", root, "--threads", "1")
    if gate_args is not None:
        invoke_json("fit-gate", *gate_args, "--run", root)
    return RunDir(root)


def copy_run(run, root: Path):
    """A copy of ``run`` (a RunDir) at ``root``, for a test that may change it."""
    import shutil

    from adaseg.runs.run_dir import RunDir

    shutil.copytree(run.root, root)
    return RunDir(root)


def invoke(*args: str):
    """Run ``adaseg ARGS`` in-process; returns Click's result (exceptions caught)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def invoke_json(*args: str) -> dict:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.output.strip().splitlines()[-1])


def snapshot(root: Path, *, skip=("log.jsonl",)) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (the log, which records every
    attempt, is left out)."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def refused(root: Path, *args: str, expect: str, code: int | None = None) -> str:
    """``adaseg ARGS`` is refused: a non-zero exit (``code`` when given), no traceback, the last
    output line is ``Error: ...`` and holds ``expect``, and every file under ``root`` (its log
    aside) is byte-identical afterwards. Returns that line."""
    before = snapshot(Path(root))
    result = invoke(*args)
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("Error:") and result.output.count("Error:") == 1, result.output
    assert expect in " ".join(result.output.split()), result.output
    assert snapshot(Path(root)) == before, "the run directory changed"
    return lines[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, cwd: Path, nproc: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node NPROC -m adaseg.cli.main ARGS`` on a fresh local port (gloo on
    CPU), run in ``cwd``. torchrun's own parser takes ``--run`` for an abbreviation of
    ``--run-path``: callers use the default run directory (``cwd/runs/default``) instead."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
              "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "adaseg.cli.main"]
    return subprocess.run([*launch, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def hand_val_table(run, exits_wanted) -> None:
    """Overwrite the run's val Step B (derived_val.safetensors) with a hand-made table sending
    image i to ``exits_wanted[i]`` at beta 0 (quality 1 there, 0 elsewhere), keeping its
    parent, ids and features: the oracle gate's independent input in the oracle tests."""
    import torch

    from adaseg.runs.derived import DerivedDataset, load_val_derived, val_derived_path

    real = load_val_derived(run)
    cols = real.exit_list
    q = torch.zeros(real.num_images, len(cols), dtype=torch.float64)
    for i, e in enumerate(exits_wanted):
        q[i, cols.index(e)] = 1.0
    DerivedDataset(exits=real.exits, quality=q, features=real.features, metric=real.metric, depth=real.depth,
                   parent_fingerprint=real.parent_fingerprint, image_ids=real.image_ids, info=dict(real.info),
                   exit2_features=real.exit2_features).save(val_derived_path(run))
