"""Assert that the installed adaseg._C holds CUDA (and CPU) kernels for both ops; no GPU needed.

Run by .ci/cuda_build (and tools/gpu_check.sh) in a fresh process, from outside the source
tree, under the CUDA build of torch. It asks PyTorch's dispatcher directly, and checks that
``adaseg doctor --json`` reports the same and exits 0. Prints "CUDA KERNELS OK".

    python tests/install/cuda_kernels_check.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch


def main() -> None:
    assert torch.version.cuda is not None, f"torch {torch.__version__} is not a CUDA build"
    from adaseg.ops import _extension

    module = _extension.load()
    assert module.with_cuda == 1, f"{module.__file__} was compiled without CUDA kernels"
    for op in _extension.OPS:
        for key in ("CPU", "CUDA"):
            # the dispatcher itself, independent of adaseg's wrapper
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"adaseg::{op}", key), f"no {key} kernel for {op}"
    print("dispatcher: CPU and CUDA kernels for", ", ".join(_extension.OPS), "from", module.__file__)

    adaseg_cli = os.path.join(os.path.dirname(sys.executable), "adaseg")
    proc = subprocess.run([adaseg_cli, "doctor", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert all(k == {"CPU": True, "CUDA": True} for k in report["extension"]["kernels"].values()), report["extension"]
    assert report["backends"]["ms_deform_attn"]["cuda"]["backend"] == "ext", report["backends"]
    print("CUDA KERNELS OK")


if __name__ == "__main__":
    main()
