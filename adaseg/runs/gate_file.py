"""Gate files: which one ``--gate FILE|latest|auto|none`` names, and loading one for a parent.

Apart from :mod:`adaseg.engine.fit_gate` (which trains gates and writes these files) so that
using a fitted gate (eval, predict, the Python API) does not import the gate-training code.
"""

from __future__ import annotations

from pathlib import Path

from adaseg.runs.run_dir import recreate_hint
from adaseg.storage.checkpoint import CheckpointError, load_into, read_checkpoint_meta
from adaseg.runs.run_dir import RunDir, RunDirError

GATE_KIND = "gate"
AUTO = "auto"  # the default of `adaseg eval`, `adaseg predict`, adaseg.evaluate and adaseg.load_run


class GateChoiceError(ValueError):
    """A gate and a fixed exit were both asked for (a gate picks each image's exit);
    ``param`` names the option at fault, as :class:`adaseg.engine.evaluate.EvalSettingError` does."""

    param = "exit"


def load_gate(path: str | Path, *, parent_fingerprint: str | None):
    """Return ``(gate, meta)``: the :class:`adaseg.models.adaptive.gate.Gate` stored at ``path`` and its
    metadata (``config``, ``extra`` with settings, stats and fingerprints).

    With ``parent_fingerprint`` given, a gate fitted for another parent is refused with
    :class:`RunDirError` (one line saying to fit it again).
    """
    from adaseg.models.adaptive.gate import Gate

    meta = read_checkpoint_meta(path, hint=recreate_hint(path))
    if meta.kind != GATE_KIND:
        raise CheckpointError(f"{path} is a {meta.kind!r} checkpoint, not a gate")
    fitted_for = meta.extra.get("parent_fingerprint")
    if parent_fingerprint is not None and fitted_for != parent_fingerprint:
        raise RunDirError(
            f"gate {path} was fitted for parent {str(fitted_for)[:12]}, not this run's parent "
            f"{parent_fingerprint[:12]}: fit it again with `adaseg fit-gate`"
        )
    try:
        # a gate file without "features" reads the paper's pooled backbone tokens
        gate = Gate(in_channels=int(meta.config["in_channels"]), exits=tuple(meta.config["exits"]),
                    features=meta.config.get("features", "backbone"))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"gate {path}: its config {meta.config} does not describe a gate ({exc})") from None
    meta = load_into(gate, path, hint=recreate_hint(path))  # verified: content hash, finite weights
    return gate, {"config": meta.config, "extra": meta.extra, "fingerprint": meta.fingerprint,
                  "content_hash": meta.content_hash}


def choose_gate(run: RunDir, spec: str = AUTO, *, exit: int | None = None) -> Path | None:
    """``--gate FILE|latest|auto|none`` together with ``--exit`` -> the gate file to load, or None.

    ``auto`` is ``latest`` when the run has a gate and no fixed ``exit`` is given, else
    ``none``. A named gate (a file or ``latest``) with a fixed ``exit`` is refused with
    :class:`GateChoiceError`. The one rule ``adaseg eval``, ``adaseg predict``,
    :func:`adaseg.evaluate` and :func:`adaseg.load_run` share."""
    if spec == AUTO:
        spec = "latest" if (run.has("gate") and exit is None) else "none"
    elif spec != "none" and exit is not None:
        raise GateChoiceError("--exit and --gate are exclusive: a gate picks each image's exit (use --gate none)")
    return resolve_gate(run, spec)


def resolve_gate(run: RunDir, spec: str) -> Path | None:
    """``--gate FILE|latest|none`` -> a gate path (``latest``: the most recently fitted) or None.

    A gate's JSON sidecar (``X.json`` beside ``X.safetensors``) is refused with one line naming
    the ``.safetensors`` file to pass: the weights live there, and an explicit refusal keeps the
    report's ``gate`` the file that was actually loaded."""
    if spec == "none":
        return None
    if spec == "latest":
        run.require("gate")
        return max(run.gate_files(), key=lambda p: read_checkpoint_meta(p, hint=recreate_hint(p)).extra.get("created", 0.0))
    path = Path(spec)
    if not path.exists() and (run.gates_dir / spec).exists():
        path = run.gates_dir / spec
    if path.is_dir():
        raise RunDirError(f"--gate {path} is a directory; pass a gate file ({run.gates_dir}/gate_*.safetensors)")
    if not path.is_file():
        raise RunDirError(f"--gate {spec}: no such file (nor in {run.gates_dir})")
    if path.suffix.lower() == ".json":
        twin = path.with_suffix(".safetensors")
        if twin.is_file():
            raise RunDirError(f"--gate {spec}: {path} is the gate's JSON sidecar; pass its weights file {twin}")
        raise RunDirError(f"--gate {spec}: {path} is a JSON file, not a gate, and no {twin.name} lies beside it "
                          "(pass a gate's .safetensors file)")
    kind = read_checkpoint_meta(path, hint=recreate_hint(path)).kind  # CheckpointError names other adaseg files (a derived dataset)
    if kind != GATE_KIND:
        raise RunDirError(f"--gate {spec}: {path} is a {kind!r} checkpoint, not a gate")
    return path
