"""``adaseg doctor``: its kernel facts agree with PyTorch's dispatcher, and its verdict (exit 1)
follows the rule "a compiled fast path is missing where this machine could have it"."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from click.testing import CliRunner

from adaseg.cli.doctor import problems
from adaseg.cli.main import main
from adaseg.ops import _extension

OPS = ("ms_deform_attn", "ms_deform_attn_backward")


def _invoke(*args: str):
    return CliRunner().invoke(main, ["doctor", *args], catch_exceptions=False)


@pytest.mark.skipif(not _extension.is_built(), reason="adaseg._C is not built in this environment")
def test_json_report_agrees_with_the_dispatcher():
    result = _invoke("--json")
    report = json.loads(result.output)
    assert report["extension"]["built"] and report["extension"]["loaded"], report["extension"]
    for op in OPS:
        for key in ("CPU", "CUDA"):
            # asked of the dispatcher directly (the doctor goes through torch's op objects)
            expected = torch._C._dispatch_has_kernel_for_dispatch_key(f"adaseg::{op}", key)
            assert report["extension"]["kernels"][op][key] is expected, (op, key)
    assert report["extension"]["kernels"]["ms_deform_attn"]["CPU"] is True
    assert report["versions"]["torch"] == torch.__version__
    assert report["threads"]["torch_threads"] == torch.get_num_threads()
    assert report["backends"]["ms_deform_attn"]["cpu"]["backend"] == "ext"
    assert report["backends"]["pausing"]["cpu"] == {"backend": "reference", "why": "tensors not on CUDA"}
    assert report["triton"]["mode"] == "interpreter"  # tests/conftest.py sets TRITON_INTERPRET=1
    assert result.exit_code == (1 if report["problems"] else 0)
    if torch.version.cuda is None:  # a CPU torch: nothing more to have here
        assert report["problems"] == [] and result.exit_code == 0


@pytest.mark.skipif(not _extension.is_built(), reason="adaseg._C is not built in this environment")
def test_table_names_every_op_and_backend():
    result = _invoke()
    for text in ("adaseg doctor", "kernels ms_deform_attn", "kernels ms_deform_attn_backward",
                 "ms_deform_attn on cpu", "ms_deform_attn on cuda", "pausing on cuda", "threads"):
        assert text in result.output, text


def test_forced_reference_backend_is_reported_with_its_reason(monkeypatch):
    monkeypatch.setenv("ADASEG_MSDA_BACKEND", "reference")
    report = json.loads(_invoke("--json").output)
    assert report["backends"]["ms_deform_attn"]["cpu"] == {"backend": "reference", "why": "ADASEG_MSDA_BACKEND=reference"}


# A hand-written healthy report of a CPU-only machine; each case below changes one fact.
_HEALTHY = {
    "versions": {"torch_cuda": None},
    "build": {"cuda_toolkit": None},
    "extension": {"built": True, "loaded": True, "load_error": None,
                  "kernels": {op: {"CPU": True, "CUDA": False} for op in OPS}},
    "devices": {"cuda_available": False},
    "triton": {"installed": True, "mode": "native"},
}


def _report(**changes) -> dict:
    report = copy.deepcopy(_HEALTHY)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = report
        for key in parents:
            node = node[key]
        node[leaf] = value
    return report


def _cuda_kernels(present: bool) -> dict:
    return {op: {"CPU": True, "CUDA": present} for op in OPS}


@pytest.mark.parametrize(
    ("changes", "expect"),
    [
        ({}, []),
        ({"extension__built": False, "extension__loaded": False}, ["adaseg._C is not built"]),
        ({"extension__loaded": False, "extension__load_error": "undefined symbol"}, ["does not load: undefined symbol"]),
        ({"extension__kernels": {op: {"CPU": False, "CUDA": False} for op in OPS}}, ["no CPU kernel for ms_deform_attn, ms_deform_attn_backward"]),
        # CUDA torch on a build machine: no GPU but a toolkit -> the CUDA kernels could be had
        ({"versions__torch_cuda": "13.0", "build__cuda_toolkit": {"home": "/usr/local/cuda-13.0"}}, ["no CUDA kernel"]),
        ({"versions__torch_cuda": "13.0", "build__cuda_toolkit": {"home": "/usr/local/cuda-13.0"},
          "extension__kernels": _cuda_kernels(True)}, []),
        # CUDA torch, no GPU, no toolkit: nothing to build them with, nothing to run them on
        ({"versions__torch_cuda": "13.0"}, []),
        ({"versions__torch_cuda": "12.8", "devices__cuda_available": True}, ["a GPU is visible, but the dispatcher has no CUDA kernel"]),
        ({"versions__torch_cuda": "12.8", "devices__cuda_available": True, "extension__kernels": _cuda_kernels(True),
          "triton__mode": "interpreter"}, ["TRITON_INTERPRET=1"]),
        ({"versions__torch_cuda": "12.8", "devices__cuda_available": True, "extension__kernels": _cuda_kernels(True),
          "triton__installed": False}, ["triton is not installed"]),
    ],
)
def test_verdict(changes, expect):
    found = problems(_report(**changes))
    assert len(found) == len(expect), found
    for line, text in zip(found, expect):
        assert text in line, line
