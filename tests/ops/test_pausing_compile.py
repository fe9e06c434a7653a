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

_SCRIPT = r"""
import os, sys
os.environ.pop("TRITON_INTERPRET", None)
import triton, triton.language as tl
from triton.compiler import ASTSource
from triton.backends.compiler import GPUTarget
from adaseg.ops.triton import entropy, rows, topk

def build(cc, fn, types, consts, **opts):
    sig = {n: types.get(n, "constexpr" if n in consts else "i32") for n in fn.arg_names}
    k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=GPUTarget("cuda", cc, 32), options=opts)
    assert "ptx" in k.asm and "cubin" in k.asm, sorted(k.asm)
    print("compiled", cc, fn.__name__, {n: v for n, v in consts.items()})

ent = lambda dt: {"x_ptr": "*" + dt, "w_ptr": "*" + dt, "b_ptr": "*fp32", "h_ptr": "*fp32"}
blocks = {"BLOCK_M": 128, "BLOCK_C": 32, "BLOCK_D": 64}
build(90, entropy._aux_entropy_kernel, ent("bf16"), dict(blocks, DOT_DTYPE=tl.bfloat16, DOT_PRECISION="tf32"), num_warps=4, num_stages=3)
build(90, entropy._aux_entropy_kernel, ent("fp32"), dict(blocks, DOT_DTYPE=tl.float32, DOT_PRECISION="tf32x3"), num_warps=4, num_stages=3)
build(80, entropy._aux_entropy_kernel, ent("fp16"), dict(blocks, DOT_DTYPE=tl.float16, DOT_PRECISION="tf32"), num_warps=4, num_stages=3)
build(90, topk._keep_flags_kernel, {"h_ptr": "*fp32", "flag_ptr": "*i8"}, {"BLOCK_I": 128, "BLOCK_J": 128})
build(90, topk._compact_kernel, {"flag_ptr": "*i8", "x_ptr": "*bf16", "keep_ptr": "*i64", "pause_ptr": "*i64", "kept_ptr": "*bf16"},
      {"BLOCK_I": 32, "BLOCK_D": 128, "PREFIX": 1024})
mv = lambda dt: {"src_ptr": "*" + dt, "dst_ptr": "*" + dt, "src_idx_ptr": "*i64", "dst_idx_ptr": "*i64"}
for dt, flags in [("bf16", (True, True, True)), ("fp32", (False, False, True)), ("i1", (True, True, False))]:
    build(90, rows._move_rows_kernel, mv(dt), dict(zip(("HAS_SRC", "HAS_SRC_IDX", "HAS_DST_IDX"), flags), BLOCK_R=32, BLOCK_D=128))
print("ALL OK")
"""


@pytest.mark.skipif(not os.path.exists(_PTXAS), reason=f"triton's ptxas is not at {_PTXAS}")
def test_kernels_compile_for_sm90_and_sm80():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton 3.9's default, stated to silence its warning
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().endswith("ALL OK"), proc.stdout
    assert proc.stdout.count("compiled") == 8
