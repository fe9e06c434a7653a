"""adaseg's build: the Python packages, the console script, and the ``adaseg._C`` extension.

The extension needs torch at build time, so install with ``--no-build-isolation`` after
installing torch (see README.md). CPU kernels are always built; CUDA kernels too when
the installed torch has CUDA and ``nvcc`` is found (``TORCH_CUDA_ARCH_LIST`` picks the
architectures). If the extension cannot be built (no compiler, no torch), the package
still installs and ``adaseg.ops`` falls back to the pure-PyTorch reference.
"""

from __future__ import annotations

import glob
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _read_version() -> str:
    with open(os.path.join(ROOT, "adaseg", "__init__.py")) as f:
        for line in f:
            if line.startswith("__version__"):
                return line.split("=")[1].strip().strip('"')
    raise RuntimeError("no __version__ in adaseg/__init__.py")


def _extension_setup() -> dict:
    """ext_modules and cmdclass for ``adaseg._C``, or nothing when torch is absent."""
    if os.environ.get("ADASEG_NO_EXTENSION") == "1":
        print("adaseg: ADASEG_NO_EXTENSION=1, skipping the C++/CUDA extension", file=sys.stderr)
        return {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print(
            "adaseg: torch is not importable in the build environment; building without the "
            "C++/CUDA extension (install torch first, then `pip install --no-build-isolation .`)",
            file=sys.stderr,
        )
        return {}

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    if not sources:
        return {}
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    with_cuda = bool(
        cuda_sources
        and torch.version.cuda is not None
        and cpp_extension.CUDA_HOME is not None
        and os.environ.get("ADASEG_NO_CUDA") != "1"
    )
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

    class OptionalBuildExt(cpp_extension.BuildExtension):
        """Build the extension, but let the install succeed without it.

        The op's dispatcher falls back to the reference (with one warning naming how to
        get the fast path), so a missing compiler costs speed, not function.
        """

        def run(self):
            try:
                super().run()
            except Exception as exc:  # the compiler's own error is printed above this line
                print(f"adaseg: WARNING: the C++ extension was not built ({exc}); "
                      "adaseg will use the pure-PyTorch reference ops.", file=sys.stderr)

    return {"ext_modules": [ext], "cmdclass": {"build_ext": OptionalBuildExt}}


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
        "pycocotools>=2.0.7",
        "cityscapesscripts>=2.2.4",
        "triton>=3.0; platform_system == 'Linux'",
    ],
    extras_require={"test": ["pytest>=8", "transformers>=4.40"]},
    entry_points={"console_scripts": ["adaseg = adaseg.cli.main:main"]},
    **_extension_setup(),
)
