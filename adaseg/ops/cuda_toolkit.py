"""Find the CUDA toolkit that builds ``adaseg._C`` and the GPU architectures to build for.

Used by ``setup.py`` (loaded by file path, before the package is importable, so this module
imports nothing but the standard library) and by ``adaseg doctor``.

Why not torch's own guess: ``torch.utils.cpp_extension`` takes ``CUDA_HOME`` as the parent
of the directory holding the first ``nvcc`` on the PATH. With ``nvcc`` installed as a
symlink or a wrapper script in ``/usr/local/bin`` that is ``/usr/local``, which has no
``lib64/libcudart.so``, and linking fails with ``cannot find -lcudart``. Here the real
toolkit is found by resolving symlinks and, for wrapper scripts, by asking ``nvcc`` itself
(``nvcc --dryrun`` prints its ``TOP`` directory), and every candidate is checked for the
CUDA runtime header before it is used.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

# Built when TORCH_CUDA_ARCH_LIST is unset and no GPU is visible (a build machine or a
# container build): Ampere (A100 8.0, RTX 30xx/A10 8.6), Ada (L4/L40/RTX 40xx 8.9) and
# Hopper (H100/H200 9.0) as machine code, plus PTX for 9.0 so newer GPUs (Blackwell)
# JIT-compile the kernels at first use. Only the entries the found nvcc supports are kept.
DEFAULT_ARCHS = ("8.0", "8.6", "8.9", "9.0")
DEFAULT_PTX_ARCH = "9.0"


@dataclass(frozen=True)
class Toolkit:
    """A CUDA toolkit: its root (what ``CUDA_HOME`` must be), its nvcc, how it was found."""

    home: str
    nvcc: str
    how: str  # e.g. "CUDA_HOME", "nvcc on PATH (/usr/local/bin/nvcc -> /usr/local/cuda-13.0)"


def is_toolkit_root(path: str) -> bool:
    """True when ``path`` looks like a CUDA toolkit root (nvcc and the runtime header)."""
    return os.path.isfile(os.path.join(path, "bin", "nvcc")) and os.path.isfile(
        os.path.join(path, "include", "cuda_runtime.h")
    )


def _nvcc_top(nvcc: str) -> str | None:
    """The toolkit root nvcc reports for itself (``#$ TOP=...`` of ``nvcc --dryrun``)."""
    try:
        proc = subprocess.run(
            [nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^#\$ TOP=(.+)$", proc.stdout + proc.stderr, re.MULTILINE)
    return os.path.realpath(match.group(1).strip()) if match else None


def find_toolkit(environ: dict[str, str] | None = None) -> tuple[Toolkit | None, str]:
    """The CUDA toolkit to build with, or None, and a one-line account of the search.

    Order: ``CUDA_HOME`` (or ``CUDA_PATH``) when set (used as given, but checked); else the
    ``nvcc`` on the PATH, resolved through symlinks and wrapper scripts; else
    ``/usr/local/cuda``.
    """
    env = os.environ if environ is None else environ
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = env.get(var)
        if home:
            if is_toolkit_root(home):
                return Toolkit(home, os.path.join(home, "bin", "nvcc"), var), f"{var}={home}"
            return None, f"{var}={home} is not a CUDA toolkit (no bin/nvcc and include/cuda_runtime.h there)"
    nvcc = shutil.which("nvcc", path=env.get("PATH"))
    if nvcc is not None:
        real = os.path.realpath(nvcc)
        candidates = [os.path.dirname(os.path.dirname(real))]
        top = _nvcc_top(nvcc)
        if top is not None:
            candidates.append(top)
        for home in candidates:
            if is_toolkit_root(home):
                return Toolkit(home, os.path.join(home, "bin", "nvcc"), f"nvcc on PATH ({nvcc} -> {home})"), f"nvcc at {nvcc}"
        return None, f"nvcc at {nvcc} but no toolkit root found from it (tried {', '.join(candidates)}); set CUDA_HOME"
    if is_toolkit_root("/usr/local/cuda"):
        home = os.path.realpath("/usr/local/cuda")
        return Toolkit(home, os.path.join(home, "bin", "nvcc"), "/usr/local/cuda"), "/usr/local/cuda"
    return None, "no nvcc on the PATH, CUDA_HOME unset and no /usr/local/cuda"


def nvcc_version(nvcc: str) -> str | None:
    """``"13.0"`` from ``nvcc --version``, or None when nvcc cannot be run."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+\.\d+)", out)
    return match.group(1) if match else None


def nvcc_archs(nvcc: str) -> list[str] | None:
    """Virtual architectures nvcc can compile for, as ``["7.5", "8.0", ...]``.

    From ``nvcc --list-gpu-arch`` (CUDA >= 11.3); None when nvcc cannot tell.
    """
    try:
        proc = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.findall(r"compute_(\d+)(\d)\b", proc.stdout)
    if proc.returncode != 0 or not found:
        return None
    return sorted({f"{major}.{minor}" for major, minor in found}, key=lambda a: tuple(map(int, a.split("."))))


def default_arch_list(supported: list[str] | None) -> str:
    """``TORCH_CUDA_ARCH_LIST`` for a GPU-less build: :data:`DEFAULT_ARCHS` that nvcc supports.

    PTX goes on the newest kept entry (9.0 normally). Raises ValueError when nvcc supports
    none of them (then the user must name architectures).
    """
    keep = [a for a in DEFAULT_ARCHS if supported is None or a in supported]
    if not keep:
        raise ValueError(
            f"nvcc supports none of the default architectures {';'.join(DEFAULT_ARCHS)} "
            f"(it lists {';'.join(supported or [])}); set TORCH_CUDA_ARCH_LIST"
        )
    ptx = DEFAULT_PTX_ARCH if DEFAULT_PTX_ARCH in keep else keep[-1]
    return ";".join(a + ("+PTX" if a == ptx else "") for a in keep)
