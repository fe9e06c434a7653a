"""The CMake build of csrc/ (CMakeLists.txt, libtorch) gives a library whose op matches the
reference. Built once per torch install into pytest's cache (incremental afterwards);
checked in a subprocess because adaseg._C registers the same op namespace."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CHECK = Path(__file__).with_name("msda_cmake_check.py")

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")


@pytest.fixture(scope="module")
def cmake_library(request) -> Path:
    prefix = torch.utils.cmake_prefix_path
    # A build directory per torch install: CMake caches Torch_DIR, so one directory must
    # never see two torches.
    key = hashlib.sha1(f"{prefix}|{torch.__version__}|{ROOT}".encode()).hexdigest()[:12]
    build = Path(request.config.cache.mkdir(f"adaseg-cmake-{key}"))
    configure = ["cmake", "-S", str(ROOT), "-B", str(build), f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Release"]
    if shutil.which("ninja") and not (build / "Makefile").exists():
        configure += ["-G", "Ninja"]
    for cmd in (configure, ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2)]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    libs = sorted(build.glob("libadaseg_ops.*"))
    assert libs, f"no libadaseg_ops library in {build}"
    return libs[0]


def test_cmake_library_matches_reference(cmake_library):
    proc = subprocess.run(
        [sys.executable, str(CHECK), str(cmake_library)], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout[-4000:] + proc.stderr[-4000:]
