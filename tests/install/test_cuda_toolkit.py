"""Finding the CUDA toolkit and the default architectures (adaseg/ops/cuda_toolkit.py).

Each case builds a fake toolkit tree by hand (a shell-script nvcc and the runtime header),
so the expected root is known independently of the code under test.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from adaseg.ops import cuda_toolkit


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _toolkit(root: Path, archs: str = "compute_75\ncompute_80\ncompute_90\ncompute_100\n") -> Path:
    """A fake toolkit at root: bin/nvcc (answers --version, --list-gpu-arch, --dryrun) + header."""
    (root / "include").mkdir(parents=True)
    (root / "include" / "cuda_runtime.h").write_text("")
    _script(root / "bin" / "nvcc", f"""case "$1" in
  --version) echo "Cuda compilation tools, release 12.8, V12.8.93";;
  --list-gpu-arch) printf '{archs}';;
  --dryrun) echo "#$ _HERE_={root}/bin"; echo "#$ TOP={root}/bin/..";;
esac
""")
    return root


def test_symlinked_nvcc_resolves_to_the_real_toolkit(tmp_path):
    root = _toolkit(tmp_path / "cuda-12.8")
    (tmp_path / "usr_bin").mkdir()
    os.symlink(root / "bin" / "nvcc", tmp_path / "usr_bin" / "nvcc")
    toolkit, _ = cuda_toolkit.find_toolkit({"PATH": str(tmp_path / "usr_bin")})
    assert toolkit is not None and toolkit.home == str(root)
    assert toolkit.nvcc == str(root / "bin" / "nvcc")


def test_wrapper_script_nvcc_is_asked_for_its_root(tmp_path):
    # /usr/local/bin/nvcc on this machine is `exec /usr/local/cuda-13.0/bin/nvcc "$@"`: the
    # parent of its directory (/usr/local) is not a toolkit; nvcc --dryrun names the real one.
    root = _toolkit(tmp_path / "cuda-13.0")
    wrapper = _script(tmp_path / "local" / "bin" / "nvcc", f'exec {root}/bin/nvcc "$@"\n')
    toolkit, how = cuda_toolkit.find_toolkit({"PATH": str(wrapper.parent)})
    assert toolkit is not None and toolkit.home == str(root), how


def test_cuda_home_wins_and_is_checked(tmp_path):
    root = _toolkit(tmp_path / "cuda")
    other = _toolkit(tmp_path / "other")
    toolkit, _ = cuda_toolkit.find_toolkit({"CUDA_HOME": str(root), "PATH": str(other / "bin")})
    assert toolkit.home == str(root) and toolkit.how == "CUDA_HOME"
    toolkit, how = cuda_toolkit.find_toolkit({"CUDA_HOME": str(tmp_path), "PATH": str(other / "bin")})
    assert toolkit is None and f"CUDA_HOME={tmp_path} is not a CUDA toolkit" in how


def test_no_nvcc_anywhere(tmp_path, monkeypatch):
    monkeypatch.setattr(cuda_toolkit, "is_toolkit_root", lambda path: False)  # hide /usr/local/cuda
    toolkit, how = cuda_toolkit.find_toolkit({"PATH": str(tmp_path)})
    assert toolkit is None and "no nvcc" in how


def test_nvcc_version_and_archs_are_parsed(tmp_path):
    nvcc = str(_toolkit(tmp_path / "cuda") / "bin" / "nvcc")
    assert cuda_toolkit.nvcc_version(nvcc) == "12.8"
    assert cuda_toolkit.nvcc_archs(nvcc) == ["7.5", "8.0", "9.0", "10.0"]


@pytest.mark.parametrize(
    ("supported", "expected"),
    [
        (None, "8.0;8.6;8.9;9.0+PTX"),  # nvcc cannot list: the documented default as is
        (["7.5", "8.0", "8.6", "8.7", "8.9", "9.0", "10.0", "12.0"], "8.0;8.6;8.9;9.0+PTX"),  # CUDA 13
        (["5.0", "6.0", "7.0", "7.5", "8.0", "8.6"], "8.0;8.6+PTX"),  # CUDA 11.1: no Ada/Hopper yet
    ],
)
def test_default_arch_list_keeps_what_nvcc_supports(supported, expected):
    assert cuda_toolkit.default_arch_list(supported) == expected


def test_default_arch_list_fails_when_nvcc_supports_none():
    with pytest.raises(ValueError, match="set TORCH_CUDA_ARCH_LIST"):
        cuda_toolkit.default_arch_list(["3.5", "5.0"])
