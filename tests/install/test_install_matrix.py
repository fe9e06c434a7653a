"""How adaseg installs, tried as a user would: fresh virtual environments, real pip, real builds.

(a) README's install line in a fresh venv that already has `wheel` (pip then used to take
    the legacy `setup.py develop` path and built no extension) -> adaseg._C is built and
    the editable install is a platform wheel (PEP 660).
(b) a build that fails (an invalid compiler flag in CFLAGS) -> the install fails, showing the
    compiler's error and how to opt out; with ADASEG_NO_EXTENSION=1 it installs and the op
    warns once, at its first use.
(c) `pip wheel --no-build-isolation --no-deps .` -> a platform wheel holding _C and the
    shipped assets, which installs into a fresh venv and runs `adaseg doctor` and a short
    `adaseg demo` from another directory.

Each case works on its own copy of the source tree, so no build output is shared. They
take minutes (venvs, torch from pip's cache, three compiles), so they only run when
ADASEG_INSTALL_TESTS=1; .ci/run sets it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("ADASEG_INSTALL_TESTS") != "1",
    reason="builds venvs and the extension (minutes); set ADASEG_INSTALL_TESTS=1 (.ci/run does)",
)

ROOT = Path(__file__).resolve().parents[2]
BAD_FLAG = "-fadaseg-no-such-flag"
# The torch this suite runs under, without a local tag: the CPU wheel on a CPU machine.
TORCH_PIN = "torch==" + __import__("torch").__version__.split("+")[0]
_IGNORE_ANYWHERE = shutil.ignore_patterns("*.so", "*.egg-info", "__pycache__", ".pytest_cache")
# Only at the top: adaseg/runs is a package (the run directory's code), not a user's runs/.
_IGNORE_AT_ROOT = {".venv", ".git", "build", "dist", "runs", ".whl", ".gl", ".import_linter_cache"}


def IGNORE(folder: str, names: list[str]) -> set[str]:
    """What a source copy leaves out: build outputs anywhere, the user's folders at the top."""
    ignored = set(_IGNORE_ANYWHERE(folder, names))
    if Path(folder).resolve() == ROOT.resolve():
        ignored |= _IGNORE_AT_ROOT & set(names)
    return ignored


def _sh(cmd: str | list[str], cwd: Path, env: dict | None = None, timeout: int = 3600) -> subprocess.CompletedProcess:
    """A shell command line (str) or an argument list, in a clean environment plus ``env``."""
    full = {k: v for k, v in os.environ.items() if k not in ("ADASEG_NO_EXTENSION", "ADASEG_NO_CUDA", "CFLAGS",
                                                              "TRITON_INTERPRET", "VIRTUAL_ENV", "PYTHONPATH")}
    full.update(env or {})
    args = ["bash", "-euo", "pipefail", "-c", cmd] if isinstance(cmd, str) else cmd
    return subprocess.run(args, cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def _source_copy(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=IGNORE)
    return dest


def _readme_install_line() -> str:
    """README's first ci:commands line up to the install (the demo after it takes minutes)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- ci:commands -->", 1)[1].split("<!-- /ci:commands -->", 1)[0]
    line = next(ln for ln in block.splitlines() if "pip install" in ln)
    install = line.split("&& .venv/bin/adaseg", 1)[0].strip()
    assert "--no-build-isolation" in install and install.startswith("python3 -m venv .venv"), line
    return install


_KERNELS = """
import sys, torch
from adaseg.ops import _extension
_extension.load()
for op in _extension.OPS:
    # the dispatcher itself, not adaseg's wrapper around it
    assert torch._C._dispatch_has_kernel_for_dispatch_key("adaseg::" + op, "CPU"), op
print("CPU kernels registered", _extension.MODULE, sys.modules[_extension.MODULE].__file__)
"""


@pytest.fixture(scope="module")
def venv_a(tmp_path_factory) -> tuple[Path, Path]:
    """(a): a copy of the tree with README's install line run in it, `wheel` preinstalled."""
    src = _source_copy(tmp_path_factory.mktemp("a") / "adaseg")
    _ok(_sh("python3 -m venv .venv && .venv/bin/pip install -q wheel", src))
    out = _ok(_sh(_readme_install_line(), src))
    assert "setup.py develop" not in out, "pip took the legacy develop path"
    return src, src / ".venv"


def test_a_readme_install_with_wheel_builds_the_extension(venv_a, tmp_path):
    src, venv = venv_a
    assert list((src / "adaseg").glob("_C.*.so")), "no adaseg/_C*.so after the editable install"
    wheel_meta = next((venv / "lib").glob("python3*/site-packages/adaseg-*.dist-info/WHEEL")).read_text()
    tag = re.search(r"^Tag: (.+)$", wheel_meta, re.MULTILINE).group(1)
    assert tag.endswith("linux_x86_64") and not tag.startswith("py3-none"), wheel_meta
    assert "CPU kernels registered" in _ok(_sh([f"{venv}/bin/python", "-c", _KERNELS], tmp_path))


def test_b_failed_build_fails_the_install_and_says_how_to_opt_out(venv_a, tmp_path):
    _, venv = venv_a
    src = _source_copy(tmp_path / "adaseg")
    proc = _sh(f"{venv}/bin/pip install --no-build-isolation --no-deps {src}", tmp_path, {"CFLAGS": BAD_FLAG})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-4000:]
    assert re.search(rf"(unrecognized|unknown).*{BAD_FLAG}", out), out[-6000:]  # the compiler's own error
    assert "building the C++ extension adaseg._C failed" in out, out[-4000:]
    assert "set ADASEG_NO_EXTENSION=1" in out, out[-4000:]


def test_b_opt_out_installs_and_the_op_warns_once(venv_a, tmp_path):
    _, venv = venv_a
    src = _source_copy(tmp_path / "adaseg")
    out = _ok(_sh(f"{venv}/bin/pip install -v --no-build-isolation --no-deps {src}", tmp_path,
                  {"ADASEG_NO_EXTENSION": "1", "CFLAGS": BAD_FLAG}))  # the bad flag proves nothing compiles
    assert "ADASEG_NO_EXTENSION=1: installing WITHOUT the compiled extension" in out
    script = """
import warnings
import torch
from adaseg.ops import _extension, ms_deform_attn, reference
from adaseg.ops.msda_inputs import make_msda_inputs
assert not _extension.is_built()
inputs = make_msda_inputs(batch=1, queries=5, heads=2, head_dim=4, shapes=[(4, 4), (2, 2)], points=2, seed=0)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert not caught
    first = ms_deform_attn(*inputs)
    assert len(caught) == 1, [str(w.message) for w in caught]
    second = ms_deform_attn(*inputs)
    assert len(caught) == 1, [str(w.message) for w in caught]
msg = str(caught[0].message)
assert caught[0].category is RuntimeWarning and "reference" in msg and "not built" in msg, msg
torch.testing.assert_close(first, reference.ms_deform_attn(*inputs))
print("warned once:", msg)
"""
    assert "warned once:" in _ok(_sh([f"{venv}/bin/python", "-c", script], tmp_path))
    doctor = _sh([f"{venv}/bin/adaseg", "doctor"], tmp_path)
    assert doctor.returncode == 1 and "adaseg._C is not built" in doctor.stdout, doctor.stdout[-3000:]


def test_c_wheel_has_extension_and_assets_and_runs_elsewhere(venv_a, tmp_path):
    _, venv_build = venv_a
    src = _source_copy(tmp_path / "adaseg")
    _ok(_sh(f"{venv_build}/bin/pip wheel --no-build-isolation --no-deps -w {tmp_path}/dist .", src))
    wheels = list((tmp_path / "dist").glob("adaseg-*.whl"))
    assert len(wheels) == 1, wheels
    wheel = wheels[0]
    assert re.search(r"-cp3\d+-cp3\d+-linux_x86_64\.whl$", wheel.name), wheel.name
    names = set(zipfile.ZipFile(wheel).namelist())
    assert any(re.fullmatch(r"adaseg/_C\.cpython-3\d+-x86_64-linux-gnu\.so", n) for n in names), sorted(names)
    assets = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "adaseg" / "assets").iterdir()
                    if p.suffix in (".safetensors", ".json"))
    assert assets and set(assets) <= names, set(assets) - names
    assert "adaseg/cli/main.py" in names

    venv = tmp_path / "fresh"
    _ok(_sh(f"{sys.executable} -m venv {venv} && {venv}/bin/pip install -q {TORCH_PIN} 'numpy<2.4' "
            f"&& {venv}/bin/pip install -q {wheel}", tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    doctor = _ok(_sh(f"{venv}/bin/adaseg doctor", elsewhere))
    assert str(venv) in doctor.replace("\n", "") or "site-packages" in doctor, doctor  # _C from the install
    _ok(_sh(f"{venv}/bin/adaseg demo --iters 2 --derive-limit 8 --eval-limit 8 --threads 1 --run runs/c",
            elsewhere, timeout=1800))
    reports = sorted(p.name for p in (elsewhere / "runs" / "c").rglob("eval_demo_*.json"))
    assert len(reports) == 4, reports
