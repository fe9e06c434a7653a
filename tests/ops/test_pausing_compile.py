"""The pausing kernels compile for NVIDIA GPUs (Hopper sm_90, Ampere sm_80) without a GPU.

The interpreter runs the kernels' arithmetic but not the compiler, which is stricter
(types of loop-carried values, tl.dot operand dtypes and shapes, constexpr branches, the
native bf16/fp16 tensor-core dots that the interpreter widens to float32). Triton can
lower a kernel to PTX and cubin (with its bundled ptxas) for a target without the device,
so CI catches a kernel that would only fail on the GPU. The kernels in this process were
built for the interpreter (tests/conftest.py), so compilation runs in a fresh process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton", reason="triton is not installed")

_PTXAS = os.environ.get("TRITON_PTXAS_PATH") or os.path.join(
    os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas"
)

_SCRIPT = os.path.join(os.path.dirname(__file__), "pausing_compile_check.py")


@pytest.mark.skipif(not os.path.exists(_PTXAS), reason=f"triton's ptxas is not at {_PTXAS}")
def test_kernels_compile_for_sm90_and_sm80():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton 3.9's default, stated to silence its warning
    proc = subprocess.run([sys.executable, _SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().endswith("ALL OK"), proc.stdout
    assert proc.stdout.count("compiled") == 8
