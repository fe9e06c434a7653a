"""Lower the Triton pausing kernels to PTX and cubin for sm_90 and sm_80, with no GPU needed.

Run by tests/ops/test_pausing_compile.py and by .ci/run's CUDA job (under the CUDA build of
torch and its triton). Needs a fresh process without TRITON_INTERPRET (the kernels are
decorated for the interpreter or the compiler when first imported). Prints "ALL OK".

    python tests/ops/pausing_compile_check.py
"""
import os
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
