"""Gate files: which one ``--gate FILE|latest|none`` names, and loading one for a parent.

Apart from :mod:`adaseg.recipes.fit_gate` (which trains gates and writes these files) so that
using a fitted gate (eval, predict, the Python API) does not import the gate-training code.
"""

from __future__ import annotations

from pathlib import Path

from adaseg.recipes.checkpoint import CheckpointError, load_into, read_checkpoint_meta
from adaseg.recipes.run_dir import RunDir, RunDirError

GATE_KIND = "gate"


def load_gate(path: str | Path, *, parent_fingerprint: str | None):
    """Return ``(gate, meta)``: the :class:`adaseg.models.gate.Gate` stored at ``path`` and its
    metadata (``config``, ``extra`` with settings, stats and fingerprints).

    With ``parent_fingerprint`` given, a gate fitted for another parent is refused with
    :class:`RunDirError` (one line saying to fit it again).
    """
    from adaseg.models.gate import Gate

    meta = read_checkpoint_meta(path)
    if meta.kind != GATE_KIND:
        raise CheckpointError(f"{path} is a {meta.kind!r} checkpoint, not a gate")
    fitted_for = meta.extra.get("parent_fingerprint")
    if parent_fingerprint is not None and fitted_for != parent_fingerprint:
        raise RunDirError(
            f"gate {path} was fitted for parent {str(fitted_for)[:12]}, not this run's parent "
            f"{parent_fingerprint[:12]}: fit it again with `adaseg fit-gate`"
        )
    gate = Gate(in_channels=int(meta.config["in_channels"]), exits=tuple(meta.config["exits"]))
    load_into(gate, path)
    return gate, {"config": meta.config, "extra": meta.extra, "fingerprint": meta.fingerprint}


def resolve_gate(run: RunDir, spec: str) -> Path | None:
    """``--gate FILE|latest|none`` -> a gate path (``latest``: the most recently fitted) or None.

    A gate's JSON sidecar (``X.json`` beside ``X.safetensors``) is refused with one line naming
    the ``.safetensors`` file to pass: the weights live there, and an explicit refusal keeps the
    report's ``gate`` the file that was actually loaded."""
    if spec == "none":
        return None
    if spec == "latest":
        run.require("gate")
        return max(run.gate_files(), key=lambda p: read_checkpoint_meta(p).extra.get("created", 0.0))
    path = Path(spec)
    if not path.is_file() and (run.gates_dir / spec).is_file():
        path = run.gates_dir / spec
    if not path.is_file():
        raise RunDirError(f"--gate {spec}: no such file (nor in {run.gates_dir})")
    if path.suffix.lower() == ".json":
        twin = path.with_suffix(".safetensors")
        if twin.is_file():
            raise RunDirError(f"--gate {spec}: {path} is the gate's JSON sidecar; pass its weights file {twin}")
        raise RunDirError(f"--gate {spec}: {path} is a JSON file, not a gate, and no {twin.name} lies beside it "
                          "(pass a gate's .safetensors file)")
    return path
