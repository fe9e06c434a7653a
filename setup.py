"""adaseg's build: the Python packages, the console script, and the ``adaseg._C`` extension.

The extension is compiled against the torch already installed, so install torch first and
then ``pip install --no-build-isolation ...`` (see README.md; pyproject.toml says why torch
is not a build requirement). CPU kernels are always built; CUDA kernels too when that torch
has CUDA and a CUDA toolkit is found (see adaseg/ops/cuda_toolkit.py for how, and for the
architectures built when ``TORCH_CUDA_ARCH_LIST`` is unset and no GPU is visible).

A failed build fails the install, with the compiler's error and one line on how to opt
out: ``ADASEG_NO_EXTENSION=1`` installs without the extension (adaseg's ops then run the
pure-PyTorch reference and say so once), ``ADASEG_NO_CUDA=1`` without its CUDA kernels.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
OPT_OUT = (
    "adaseg: to install without the compiled ops set ADASEG_NO_EXTENSION=1 (adaseg then runs "
    "its pure-PyTorch reference ops, about 10x slower); to skip only the CUDA kernels set ADASEG_NO_CUDA=1."
)


def _read_version() -> str:
    with open(os.path.join(ROOT, "adaseg", "__init__.py")) as f:
        for line in f:
            if line.startswith("__version__"):
                return line.split("=")[1].strip().strip('"')
    raise RuntimeError("no __version__ in adaseg/__init__.py")


def _say(line: str) -> None:
    print(f"adaseg: {line}", file=sys.stderr)


def _fail(reason: str) -> None:
    """Stop the build: one line why, one line how to opt out (pip shows both, then fails)."""
    sys.exit(f"error: adaseg: {reason}\n{OPT_OUT}")


def _cuda_toolkit_module():
    """adaseg/ops/cuda_toolkit.py, loaded by path: the package is not importable yet."""
    path = os.path.join(ROOT, "adaseg", "ops", "cuda_toolkit.py")
    spec = importlib.util.spec_from_file_location("_adaseg_cuda_toolkit", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


def _configure_cuda(torch) -> bool:
    """Whether to build the CUDA kernels; sets CUDA_HOME and TORCH_CUDA_ARCH_LIST for torch.

    Must run before ``torch.utils.cpp_extension`` is imported: that module fixes its
    CUDA_HOME at import time.
    """
    if os.environ.get("ADASEG_NO_CUDA") == "1":
        _say("ADASEG_NO_CUDA=1: building the CPU kernels only")
        return False
    if torch.version.cuda is None:
        _say(f"torch {torch.__version__} is a CPU build: building the CPU kernels only")
        return False
    toolkit_mod = _cuda_toolkit_module()
    toolkit, how = toolkit_mod.find_toolkit()
    if toolkit is None and (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")):
        _fail(how)  # the user named a toolkit that is not one: say so rather than guess
    if toolkit is None:
        _say(
            f"WARNING: building WITHOUT the CUDA kernels: torch {torch.__version__} has CUDA "
            f"{torch.version.cuda} but no CUDA toolkit was found ({how}). Install the CUDA toolkit "
            "(nvcc) or set CUDA_HOME, then reinstall."
        )
        return False
    os.environ["CUDA_HOME"] = toolkit.home  # torch reads it; a set value was checked above
    _say(f"CUDA kernels: CUDA_HOME={toolkit.home} (from {toolkit.how}), nvcc {toolkit_mod.nvcc_version(toolkit.nvcc)}")
    if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        if torch.cuda.device_count() > 0:
            _say("TORCH_CUDA_ARCH_LIST unset: building for the visible GPUs (torch's default)")
        else:
            try:
                archs = toolkit_mod.default_arch_list(toolkit_mod.nvcc_archs(toolkit.nvcc))
            except ValueError as exc:
                _fail(f"cannot choose CUDA architectures: {exc}")
            os.environ["TORCH_CUDA_ARCH_LIST"] = archs
            _say(f"TORCH_CUDA_ARCH_LIST unset and no GPU visible: building for {archs}")
    else:
        _say(f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}")
    return True


class _NoTorchBuildExt(build_ext):
    """Stands in for torch's BuildExtension when torch cannot be imported: fails the build."""

    def run(self):
        _fail(
            "torch is not importable in the build environment, so adaseg._C cannot be compiled. "
            "Install torch first, then `pip install --no-build-isolation ...` (an isolated build "
            "environment has no torch)"
        )


def _extension_setup() -> dict:
    """ext_modules and cmdclass for ``adaseg._C`` (nothing when the user opted out)."""
    if os.environ.get("ADASEG_NO_EXTENSION") == "1":
        _say("ADASEG_NO_EXTENSION=1: installing WITHOUT the compiled extension adaseg._C "
             "(the pure-PyTorch reference ops will run)")
        return {}
    if importlib.util.find_spec("torch") is None:
        # Metadata and sdists need no torch; only compiling the extension does.
        return {"ext_modules": [Extension("adaseg._C", sources=[])], "cmdclass": {"build_ext": _NoTorchBuildExt}}
    import torch

    with_cuda = _configure_cuda(torch)
    from torch.utils import cpp_extension

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    # at::parallel_for only runs in parallel when the extension itself is compiled with
    # OpenMP (torch's CPU build uses the OpenMP backend; the runtime is torch's libgomp).
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    # No -std flag: torch's cpp_extension adds the standard its headers need (C++20 for
    # recent torch, C++17 for older releases).
    extra_compile_args = {"cxx": ["-O3", *openmp]}
    define_macros = []
    if with_cuda:
        extra_compile_args["nvcc"] = ["-O3"]  # no fast-math: gradients are compared in float64
        define_macros.append(("WITH_CUDA", None))
        ext_cls = cpp_extension.CUDAExtension
        sources = sources + cuda_sources
    else:
        ext_cls = cpp_extension.CppExtension
    ext = ext_cls(
        name="adaseg._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args=extra_compile_args,
        extra_link_args=openmp,
        define_macros=define_macros,
    )

    class LoudBuildExt(cpp_extension.BuildExtension):
        """torch's BuildExtension, but a failure ends the install with how to opt out.

        The compiler's own error is printed above the line this adds; the install must not
        quietly succeed without the fast path (the reference ops are ~10x slower).
        """

        def run(self):
            try:
                super().run()
            except Exception as exc:  # any failure: the compiler's, the linker's, torch's checks
                _fail(f"building the C++{'/CUDA' if with_cuda else ''} extension adaseg._C failed: "
                      f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}")

    return {"ext_modules": [ext], "cmdclass": {"build_ext": LoudBuildExt}}


setup(
    name="adaseg",
    version=_read_version(),
    description="Segmentation transformers that adapt their compute to each image (ECO-M2F + PAUMER)",
    long_description=open(os.path.join(ROOT, "README.md")).read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["adaseg", "adaseg.*"]) + ["adaseg.cli"],
    package_dir={"adaseg.cli": "cli"},
    package_data={"adaseg": ["assets/*.safetensors", "assets/*.json"]},  # shipped base checkpoints
    install_requires=[
        "torch>=2.4",
        "numpy<2.4",  # cityscapesscripts' evaluation uses np.in1d, removed in numpy 2.4
        "click>=8.1",
        "rich>=13",
        "scipy>=1.10",
        "pillow>=10.1",  # ImageFont.load_default(size=) for the predict pictures
        "safetensors>=0.4",
        "matplotlib>=3.7",  # adaseg sweep's plots (Agg backend, no display)
        "pycocotools>=2.0.7",
        "cityscapesscripts>=2.2.4",
        "triton>=3.0; platform_system == 'Linux'",
    ],
    # import-linter: tests/test_layers.py runs `lint-imports` on pyproject.toml's contracts
    # (acyclic_siblings and "a | b" layers; checked with 2.17).
    extras_require={"test": ["pytest>=8", "transformers>=4.40", "import-linter>=2.17"]},
    entry_points={"console_scripts": ["adaseg = adaseg.cli.main:main"]},
    **_extension_setup(),
)
