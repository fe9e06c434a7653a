"""Gate files: which one ``--gate FILE|latest|none`` names, and loading one for a parent.

Apart from :mod:`adaseg.engine.fit_gate` (which trains gates and writes these files) so that
using a fitted gate (eval, predict, the Python API) does not import the gate-training code.
"""

from __future__ import annotations

from pathlib import Path

from adaseg.runs.run_dir import recreate_hint
from adaseg.storage.checkpoint import CheckpointError, load_into, read_checkpoint_meta
from adaseg.runs.run_dir import RunDir, RunDirError

GATE_KIND = "gate"


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
        gate = Gate(in_channels=int(meta.config["in_channels"]), exits=tuple(meta.config["exits"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"gate {path}: its config {meta.config} does not describe a gate ({exc})") from None
    meta = load_into(gate, path, hint=recreate_hint(path))  # verified: content hash, finite weights
    return gate, {"config": meta.config, "extra": meta.extra, "fingerprint": meta.fingerprint,
                  "content_hash": meta.content_hash}


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
