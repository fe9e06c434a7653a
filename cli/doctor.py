"""``adaseg doctor``: is the fast path installed, and which backend will each op use?

Reports versions, the compiled extension (built, loaded, and the CPU/CUDA kernels the
dispatcher holds for each op), threads, devices, the backend each op picks for CPU and
for CUDA tensors and why, and how Triton runs. Exits 1 when a compiled fast path is missing
where this machine could have it, naming each one and how to get it.
"""

from __future__ import annotations

import click


@click.command(name="doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
def doctor(as_json: bool) -> None:
    """Check the installation: extension, kernels, devices, backends (exit 1 if a fast path is missing)."""
    import json

    report = collect()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_table(report)
    if report["problems"]:
        raise SystemExit(1)


def collect() -> dict:
    """Everything doctor reports, as a JSON-able dict; ``problems`` lists what is missing."""
    import importlib.metadata
    import importlib.util
    import os
    import platform
    import shutil

    import torch

    import adaseg
    from adaseg.ops import _extension, cuda_toolkit

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    versions = {
        "adaseg": adaseg.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": version("triton"),
        "numpy": version("numpy"),
        "platform": platform.platform(),
    }

    toolkit, how = cuda_toolkit.find_toolkit()
    build = {
        "cxx_compiler": shutil.which(os.environ.get("CXX", "c++")),
        "cuda_toolkit": None if toolkit is None else {
            "home": toolkit.home, "nvcc": toolkit.nvcc, "found_by": toolkit.how,
            "version": cuda_toolkit.nvcc_version(toolkit.nvcc),
        },
        "cuda_toolkit_search": how,
    }

    spec = importlib.util.find_spec(_extension.MODULE)
    ext = {"path": None if spec is None else spec.origin, "built": spec is not None, "loaded": False,
           "load_error": None, "with_cuda_flag": None, "kernels": {}}
    if spec is not None:
        try:
            module = _extension.load()
        except ImportError as exc:  # reported, not raised: this command exists to explain it
            ext["load_error"] = str(exc)
        else:
            ext["loaded"] = True
            ext["with_cuda_flag"] = bool(module.with_cuda)
    ext["kernels"] = {op: {key: _extension.has_kernel(op, key) for key in ("CPU", "CUDA")} for op in _extension.OPS}

    parallel = torch.__config__.parallel_info()
    threads = {
        "torch_threads": torch.get_num_threads(),
        "parallel_backend": next((ln.split(":", 1)[1].strip() for ln in parallel.splitlines()
                                  if ln.startswith("ATen parallel backend")), None),
        "openmp": "OpenMP" in parallel and "OpenMP not found" not in parallel,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }

    cuda_ok = torch.cuda.is_available()
    devices = {
        "cuda_available": cuda_ok,
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpus": [
            {"index": i, "name": torch.cuda.get_device_name(i),
             "capability": "%d.%d" % torch.cuda.get_device_capability(i),
             "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
            for i in range(torch.cuda.device_count())
        ] if cuda_ok else [],
    }

    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    triton = {
        "installed": versions["triton"] is not None,
        "mode": "interpreter" if interpret else "native",
        "why": "TRITON_INTERPRET=1: kernels run on CPU tensors in Python (tests)" if interpret else
               ("kernels compile for the visible GPU" if cuda_ok else
                "kernels compile for CUDA tensors; no GPU is visible here"),
    }

    backends = {"ms_deform_attn": {}, "pausing": {}}
    from adaseg.ops import pausing
    from adaseg.ops.ms_deform_attn import explain_backend as msda_backend

    for device in ("cpu", "cuda"):
        for name, explain in (
            ("ms_deform_attn", lambda d: msda_backend(torch.device(d), torch.float32)),
            ("pausing", lambda d: pausing.explain_backend("aux_entropy", d)),
        ):
            try:
                backend, why = explain(device)
            except (ImportError, RuntimeError, ValueError) as exc:  # a forced backend that cannot run
                backend, why = "error", str(exc)
            backends[name][device] = {"backend": backend, "why": why}
    # the lean inference pause stage (issue 23): on CUDA under auto, the faster entropy measured per shape
    from adaseg.ops import pause_stage

    backends["pause stage (inference)"] = {}
    for device in ("cpu", "cuda"):
        try:
            backend, why = pause_stage.explain_stage_backend(device)
            if device == "cuda" and backend == "auto" and torch.cuda.is_available():
                why = "; ".join(f"(b, n, D, C) {shape}: {chosen} ({detail})"
                                for shape, chosen, detail in pause_stage.measure_stage_backends("cuda"))
                backend = "measured"
        except (ImportError, RuntimeError, ValueError) as exc:
            backend, why = "error", str(exc)
        backends["pause stage (inference)"][device] = {"backend": backend, "why": why}

    report = {"versions": versions, "build": build, "extension": ext, "threads": threads,
              "devices": devices, "triton": triton, "backends": backends}
    report["problems"] = problems(report)
    return report


def problems(report: dict) -> list[str]:
    """Each compiled fast path that is missing where this machine could have it, with the fix.

    A CUDA kernel counts as obtainable when torch is a CUDA build and either a GPU is
    visible or a CUDA toolkit is installed (a GPU-less build machine); the Triton kernels
    when a GPU is visible.
    """
    ext, kernels = report["extension"], report["extension"]["kernels"]
    reinstall = "reinstall: `pip install --no-build-isolation -e .` in the adaseg checkout (torch installed first)"
    out = []
    if not ext["built"]:
        out.append(f"adaseg._C is not built (installed with ADASEG_NO_EXTENSION=1, or without a compiler); "
                   f"ms_deform_attn runs the ~10x slower reference; {reinstall}")
    elif not ext["loaded"]:
        out.append(f"adaseg._C is built but does not load: {ext['load_error']}")
    else:
        missing = [op for op, k in kernels.items() if not k["CPU"]]
        if missing:
            out.append(f"adaseg._C is loaded but the dispatcher has no CPU kernel for {', '.join(missing)}; {reinstall}")
    torch_cuda = report["versions"]["torch_cuda"]
    gpu = report["devices"]["cuda_available"]
    if ext["loaded"] and torch_cuda and (gpu or report["build"]["cuda_toolkit"]):
        missing = [op for op, k in kernels.items() if not k["CUDA"]]
        if missing:
            where = "a GPU is visible" if gpu else f"a CUDA toolkit is at {report['build']['cuda_toolkit']['home']}"
            out.append(f"torch has CUDA {torch_cuda} and {where}, but the dispatcher has no CUDA kernel for "
                       f"{', '.join(missing)} (adaseg._C was built without them); {reinstall}, with nvcc "
                       "found (CUDA_HOME) and without ADASEG_NO_CUDA=1")
    if gpu and not report["triton"]["installed"]:
        out.append("a GPU is visible but triton is not installed: pausing runs the reference; pip install triton")
    if gpu and report["triton"]["mode"] == "interpreter":
        out.append("a GPU is visible but TRITON_INTERPRET=1: the pausing kernels run in Python; unset it")
    return out


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def yes(flag) -> str:
        return "[green]yes[/]" if flag else "[red]no[/]"

    v, b, e, t, d, tr = (report[k] for k in ("versions", "build", "extension", "threads", "devices", "triton"))
    table = Table(title="adaseg doctor", show_lines=False)
    table.add_column("check")
    table.add_column("value")
    table.add_column("detail", overflow="fold")
    table.add_row("adaseg / python", f"{v['adaseg']} / {v['python']}", v["platform"])
    table.add_row("torch", v["torch"], f"CUDA {v['torch_cuda']}" if v["torch_cuda"] else "CPU build")
    table.add_row("triton", v["triton"] or "[red]not installed[/]", f"{tr['mode']}: {tr['why']}")
    table.add_row("numpy", v["numpy"] or "-", "")
    tk = b["cuda_toolkit"]
    table.add_row("CUDA toolkit (build)", tk["version"] if tk else "not found",
                  f"{tk['home']} ({tk['found_by']})" if tk else b["cuda_toolkit_search"])
    table.add_row("C++ compiler (build)", "found" if b["cxx_compiler"] else "[red]not found[/]", b["cxx_compiler"] or "")
    table.add_row("adaseg._C built", yes(e["built"]), e["path"] or "")
    table.add_row("adaseg._C loaded", yes(e["loaded"]), e["load_error"] or
                  ("" if e["with_cuda_flag"] is None else f"compiled with CUDA kernels: {yes(e['with_cuda_flag'])}"))
    for op, keys in e["kernels"].items():
        table.add_row(f"kernels {op}", f"CPU {yes(keys['CPU'])}  CUDA {yes(keys['CUDA'])}", "registered with the dispatcher")
    table.add_row("threads", str(t["torch_threads"]),
                  f"parallel backend {t['parallel_backend']}; OMP_NUM_THREADS={t['OMP_NUM_THREADS'] or 'unset'}")
    gpus = ", ".join(f"{g['index']}: {g['name']} (sm {g['capability']}, {g['memory_gib']} GiB)" for g in d["gpus"])
    table.add_row("GPUs", str(len(d["gpus"])), gpus or f"none visible (CUDA_VISIBLE_DEVICES={d['CUDA_VISIBLE_DEVICES'] or 'unset'})")
    for name, per in report["backends"].items():
        for device, choice in per.items():
            table.add_row(f"{name} on {device}", choice["backend"], choice["why"])
    console = Console()
    if not console.is_terminal:  # keep rows whole in logs
        console = Console(width=max(console.width, 160))
    console.print(table)
    for line in report["problems"]:
        console.print(f"[red]problem:[/] {line}", highlight=False)
    if not report["problems"]:
        console.print("adaseg doctor: every compiled fast path this machine can use is installed.")
