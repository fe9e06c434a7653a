"""Peak extra host memory of one ms_deform_attn variant, measured in a fresh process.

Run as ``python -m adaseg.bench.op_memory '<json spec>'``; prints one JSON line
``{"forward": bytes, "forward_backward": bytes}``. Called by :mod:`adaseg.bench.op`.

Method (Linux): after the inputs exist and a tiny warm-up call has loaded the code paths,
the kernel's resident-set high-water mark is reset (``/proc/self/clear_refs`` <- ``5``);
the figure is ``VmHWM - VmRSS`` (peak resident minus resident before the call) around
(1) a forward without autograd, and (2) a forward with autograd plus the backward, the
input gradients included. The parent sets ``MALLOC_MMAP_THRESHOLD_`` so that large
buffers are mmap'ed and returned to the system when freed: the resident set then follows
the live tensors instead of glibc's retained heap. A fresh process per variant keeps one
variant's allocations from hiding the other's.
"""

from __future__ import annotations

import gc
import json
import re
import sys

import torch

CLEAR_REFS = "/proc/self/clear_refs"


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1))


def _peak_extra_bytes(fn) -> int:
    gc.collect()
    with open(CLEAR_REFS, "w") as f:
        f.write("5")  # reset VmHWM to the current resident set
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) * 1024


def measure(spec: dict) -> dict:
    from adaseg.bench.op import Case, op_for
    from adaseg.ops.msda_inputs import make_msda_inputs

    torch.set_num_threads(spec["threads"])
    dtype = getattr(torch, spec["dtype"])
    case = Case(**spec["case"])
    fn = op_for(spec["variant"])
    inputs = case.inputs(dtype=dtype, locations=spec["locations"])
    grad_out = torch.randn(case.batch, case.queries, case.heads * case.head_dim, dtype=dtype)

    def forward_backward(args, grad):
        leaves = [t.clone().requires_grad_(t.is_floating_point()) for t in args]
        fn(*leaves).backward(grad)
        return leaves

    tiny = make_msda_inputs(batch=1, queries=4, heads=case.heads, head_dim=case.head_dim, shapes=[(2, 2)] * len(case.shapes), points=case.points, dtype=dtype)
    with torch.no_grad():
        fn(*tiny)
    forward_backward(tiny, torch.ones(1, 4, case.heads * case.head_dim, dtype=dtype))

    def forward():
        with torch.no_grad():
            fn(*inputs)

    # Clone the float inputs before the reset so the copies are not counted as extra.
    leaves = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]

    def fwd_bwd():
        fn(*leaves).backward(grad_out)

    return {"forward": _peak_extra_bytes(forward), "forward_backward": _peak_extra_bytes(fwd_bwd)}


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
