"""Compiled Triton pausing kernels on a GPU (fresh process without TRITON_INTERPRET).

On a CUDA machine this runs tests/ops/pausing_cuda_check.py at the paper's shapes; on CPU
it runs the same script under the interpreter at small shapes, so the script stays correct
where no GPU is available to run it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed")

_SCRIPT = os.path.join(os.path.dirname(__file__), "pausing_cuda_check.py")


def _run(env_update: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "ADASEG_PAUSE_BACKEND")}
    env.update(env_update)
    return subprocess.run([sys.executable, _SCRIPT, *args], capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_kernels_match_reference_on_gpu():
    proc = _run({})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.strip().endswith("ALL OK")


def test_gpu_check_script_under_interpreter():
    proc = _run({"TRITON_INTERPRET": "1"}, "--small")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.strip().endswith("ALL OK")
    assert proc.stdout.count("ok torch.") == 6  # 2 shapes x 3 dtypes
