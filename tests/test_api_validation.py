"""The Python API refuses bad arguments where they are given: a TypeError (wrong type) or a
ValueError (bad value), one line naming the parameter and what it allows, before anything is
loaded -- never a deep error from inside the model or torch (issue 25, "The Python API").

The rule, everywhere: numbers are ints/floats (never bools, never strings: ``exit="3"`` is
refused, only the command line parses text); specs that are text on the command line
(``pause="3:0.4"``, ``device="cuda:0"``, ``gate="latest"``) are accepted as strings. A wrong
type raises ``ArgumentTypeError``, which is both a TypeError and a ValueError.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from recipe_testing import write_folder

import adaseg
from adaseg.models.adaptive.plan import PausePlan
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.predict.predictor import PredictError, PredictTypeError
from adaseg.utils.arguments import ArgumentTypeError
from adaseg.utils.device import DeviceError, parse_device

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text, text
    return text


# ---------------------------------------------------------------------------- PausePlan

@pytest.mark.parametrize("stages,kind,match", [
    (((True, 0.4),), TypeError, r"pause layer must be a positive integer, got True \(bool\)"),
    (((3, True),), TypeError, r"pause ratio must be a number in \(0, 1\), got True \(bool\)"),
    ((("3", 0.4),), TypeError, r"pause layer must be a positive integer, got '3' \(str\)"),
    (((3, "0.4"),), TypeError, r"pause ratio must be a number .*'0.4' \(str\)"),
    (((3.0, 0.4),), TypeError, r"pause layer must be a positive integer, got 3.0 \(float\)"),
    (((3, None),), TypeError, "pause ratio must be a number"),
    (((3, float("nan")),), ValueError, r"pause ratio must be in \(0, 1\), got nan"),
    (((3, float("inf")),), ValueError, r"pause ratio must be in \(0, 1\), got inf"),
    (((3, 0.0),), ValueError, r"pause ratio must be in \(0, 1\)"),
    (((3, 1),), ValueError, r"pause ratio must be in \(0, 1\)"),
    (((0, 0.4),), ValueError, "pause layer must be a positive integer, got 0"),
    (((-2, 0.4),), ValueError, "pause layer must be a positive integer, got -2"),
    (((5, 0.3), (3, 0.4)), ValueError, "pause layers must strictly increase, got 3 after 5"),
    (((3, 0.3), (3, 0.4)), ValueError, "pause layers must strictly increase, got 3 after 3"),
    ((), ValueError, "PausePlan stages is empty"),
    ("3:0.4", TypeError, "PausePlan stages must be a tuple .*PausePlan.parse"),
    (3, TypeError, r"PausePlan stages must be a tuple of \(layer, ratio\) pairs, got 3 \(int\)"),
    (None, TypeError, "PausePlan stages must be a tuple"),
    ({3: 0.4}, TypeError, "PausePlan stages must be a tuple"),
    (((3, 0.4, 1),), TypeError, r"PausePlan stages\[0\] must be a \(layer, ratio\) pair"),
    ((3, 0.4), TypeError, r"PausePlan stages\[0\] must be a \(layer, ratio\) pair, got 3 \(int\)"),
])
def test_pause_plan_refuses(stages, kind, match):
    with pytest.raises(kind, match=match) as info:
        PausePlan(stages=stages)
    _one_line(info.value)


@pytest.mark.parametrize("spec,kind,match", [
    (3, TypeError, r"a pause spec must be a string like '3:0.4,5:0.3' or None, got 3 \(int\)"),
    (b"3:0.4", TypeError, "a pause spec must be a string"),
    (["3:0.4"], TypeError, "a pause spec must be a string"),
    ("3:nan", ValueError, r"pause ratio must be in \(0, 1\), got nan"),
    ("true:0.4", ValueError, "is not layer:ratio"),
    ("", ValueError, "the pause spec is empty"),
])
def test_pause_plan_parse_refuses(spec, kind, match):
    with pytest.raises(kind, match=match) as info:
        PausePlan.parse(spec)
    _one_line(info.value)


def test_pause_plan_valid_forms_are_equal():
    plan = PausePlan(((3, 0.4), (5, 0.3)))
    assert PausePlan(stages=[[3, 0.4], [5, 0.3]]) == plan
    assert PausePlan(stages=((np.int64(3), np.float64(0.4)), (5, 0.3))) == plan
    assert PausePlan.parse("3:0.4,5:0.3") == plan and PausePlan.parse(str(plan)) == plan
    assert all(type(layer) is int and type(ratio) is float for layer, ratio in plan.stages)
    assert hash(PausePlan(stages=[[3, 0.4], [5, 0.3]])) == hash(plan)  # stored as tuples


def test_wrong_types_are_type_errors_and_value_errors():
    # callers that caught ValueError for any bad argument keep working
    with pytest.raises(ArgumentTypeError) as info:
        PausePlan(((True, 0.4),))
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------- AdaptiveSettings

@pytest.mark.parametrize("kwargs,kind,match", [
    (dict(exits="3"), TypeError, r"exits must be None, an int .* or 'gate', got '3' \(a number is given as an int\)"),
    (dict(exits="auto"), TypeError, "exits must be .*'gate', got 'auto'"),
    (dict(exits=True), TypeError, "an exit is an encoder layer >= 1 .*got exits=True"),
    (dict(exits=0), ValueError, "an exit is an encoder layer >= 1, got exits=0"),
    (dict(exits=2.0), TypeError, r"exits must be None, an int.*got 2.0 \(float\)"),
    (dict(exits={2: 3}), TypeError, r"exits must be None, an int.*\(dict\)"),
    (dict(exits=np.array([2, 3])), TypeError, r"exits must be None, an int.*\(ndarray\)"),
    (dict(exits=[2, "3"]), TypeError, r"exits must hold one layer \(an int\) per image, got '3' \(str\)"),
    (dict(exits=[2, True]), TypeError, r"exits must hold one layer \(an int\) per image, got True \(bool\)"),
    (dict(exits=[2, 2.5]), TypeError, "exits must hold one layer"),
    (dict(exits=[2, 0]), ValueError, "an exit is an encoder layer >= 1, got 0 in exits"),
    (dict(exits=torch.tensor([2.0, 3.0])), TypeError, r"exits as a tensor must be a \(B,\) integer tensor, "
                                                      "got torch.float32"),
    (dict(exits=torch.tensor([True, False])), TypeError, "exits as a tensor must be a .* integer tensor"),
    (dict(exits=torch.ones(2, 2, dtype=torch.long)), TypeError, r"of shape \(2, 2\)"),
    (dict(pause=3), TypeError, r"pause must be a PausePlan, a spec like '3:0.4,5:0.3' or None, got 3 \(int\)"),
    (dict(pause=((3, 0.4),)), TypeError, "pause must be a PausePlan"),
    (dict(pause="3:0"), ValueError, r"pause ratio must be in \(0, 1\)"),
    (dict(pause_mode="lowest"), ValueError, "pause_mode must be one of entropy, random, got 'lowest'"),
    (dict(pause_mode=None), TypeError, r"pause_mode must be one of entropy, random, got None \(NoneType\)"),
    (dict(pause_mode=1), TypeError, "pause_mode must be one of entropy, random"),
    (dict(record_exits=3), TypeError, r"record_exits must be a tuple of increasing layers \(ints\), got 3"),
    (dict(record_exits="23"), TypeError, "record_exits must be a tuple of increasing layers"),
    (dict(record_exits=torch.tensor([2, 3])), TypeError, "record_exits must be a tuple"),
    (dict(record_exits=(2, "3")), TypeError, r"record_exits must hold layers \(ints\), got '3'"),
    (dict(record_exits=(True, 2)), TypeError, "record_exits must hold layers"),
    (dict(record_exits=(3, 2)), ValueError, "record_exits must be increasing positive layers"),
    (dict(generator="seed", pause="2:0.5", pause_mode="random"), TypeError,
     "generator must be a torch.Generator or None, got 'seed'"),
    (dict(keep_aux=1), TypeError, r"keep_aux must be True, False or None, got 1 \(int\)"),
    (dict(keep_aux="yes"), TypeError, "keep_aux must be True, False or None"),
])
def test_adaptive_settings_refuses(kwargs, kind, match):
    with pytest.raises(kind, match=match) as info:
        AdaptiveSettings(**kwargs)
    _one_line(info.value)


def test_adaptive_settings_are_keyword_only():
    with pytest.raises(TypeError):
        AdaptiveSettings(3)  # noqa -- positional: which field would 3 be?


def test_adaptive_settings_valid_forms():
    assert AdaptiveSettings(exits=3).exits == 3
    assert AdaptiveSettings(exits="gate").uses_gate
    assert AdaptiveSettings(exits=[2, 3]).exits == [2, 3]
    assert AdaptiveSettings(exits=(2, 3)).exits == (2, 3)
    assert AdaptiveSettings(exits=torch.tensor([2, 3])).exits.tolist() == [2, 3]
    assert AdaptiveSettings(pause="3:0.4").pause == AdaptiveSettings(pause=PausePlan(((3, 0.4),))).pause
    assert AdaptiveSettings(record_exits=[2, 4]).record_exits == (2, 4)
    assert AdaptiveSettings(keep_aux=False).keep_aux is False


# ---------------------------------------------------------------------------- the model's forward

@pytest.fixture(scope="module", params=["m2f_tiny", "segmenter_tiny"])
def model(request):
    torch.manual_seed(0)
    return adaseg.create_model(request.param).eval()


@pytest.mark.parametrize("settings", [3, "gate", {"exits": 2}, PausePlan(((1, 0.5),))],
                         ids=["int", "str", "dict", "pauseplan"])
def test_forward_refuses_settings_that_are_not_settings(model, settings):
    images = torch.randn(1, 3, 64, 64)
    with pytest.raises(TypeError, match=r"settings must be an adaseg.AdaptiveSettings or None, got "
                                        rf"{type(settings).__name__}") as info:
        model(images, None, settings)
    _one_line(info.value)


def test_forward_refuses_images_and_masks_that_are_not_tensors(model):
    with pytest.raises(TypeError, match=r"images must be a \(B, 3, H, W\) torch.Tensor, got ndarray"):
        model(np.zeros((1, 3, 64, 64), dtype=np.float32))
    with pytest.raises(TypeError, match=r"padding_mask must be a \(B, H, W\) bool torch.Tensor or None, got list"):
        model(torch.randn(1, 3, 64, 64), [[False]])


@torch.no_grad()
def test_forward_exit_forms_agree(model):
    images = torch.randn(2, 3, 64, 64)
    ref = model(images, None, AdaptiveSettings(exits=2))
    for exits in ([2, 2], (2, 2), torch.tensor([2, 2])):
        out = model(images, None, AdaptiveSettings(exits=exits))
        assert out.exit_plan.tolist() == [2, 2]
        for key, value in ref.heads.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(out.heads[key], value), key
    with pytest.raises(ValueError, match=r"exits must be in 1..\d+, got \[2, 99\]"):
        model(images, None, AdaptiveSettings(exits=[2, 99]))


# ---------------------------------------------------------------------------- devices

@pytest.mark.parametrize("value,kind,match", [
    ("tpu", DeviceError, r"device='tpu' is not a device \(use auto, cpu, cuda, cuda:N or a torch.device\)"),
    ("meta", DeviceError, "device='meta': only cpu and cuda devices are supported"),
    ("", DeviceError, "device='' is not a device"),
    (0, ArgumentTypeError, r"device must be auto, cpu, cuda, cuda:N or a torch.device, got 0 \(int\)"),
    (None, ArgumentTypeError, "device must be auto, cpu"),
    (pytest.param("cuda", DeviceError, "device='cuda': CUDA is not available on this machine", marks=NO_CUDA)),
    (pytest.param("cuda:1", DeviceError, "CUDA is not available", marks=NO_CUDA)),
    (pytest.param(torch.device("cuda"), DeviceError, "CUDA is not available", marks=NO_CUDA)),
])
def test_parse_device_refuses(value, kind, match):
    with pytest.raises(kind, match=match) as info:
        parse_device(value)
    _one_line(info.value)
    assert isinstance(info.value, ValueError)


def test_parse_device_valid_forms():
    assert parse_device("cpu") == parse_device(" CPU ") == parse_device(torch.device("cpu")) == torch.device("cpu")
    assert parse_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_the_cli_uses_the_same_parser():
    from adaseg.cli.options import DeviceType

    assert DeviceType().convert("cpu", None, None) == torch.device("cpu")
    import click

    with pytest.raises(click.BadParameter, match=r"'tpu' is not a device \(use auto, cpu, cuda or cuda:N\)"):
        DeviceType().convert("tpu", None, None)


# ---------------------------------------------------------------------------- evaluate / load_run

# Every refusal below comes before the run directory is read: the run need not exist.
MISSING = "/nonexistent/adaseg-run"


@pytest.mark.parametrize("kwargs,kind,match", [
    (dict(exit="3"), TypeError, r"exit must be an integer or None, got '3' \(str\)"),
    (dict(exit=True), TypeError, r"exit must be an integer or None, got True \(bool\)"),
    (dict(exit=2.0), TypeError, "exit must be an integer"),
    (dict(exit=0), ValueError, "exit must be at least 1, got 0"),
    (dict(limit=0), ValueError, "limit must be at least 1, got 0"),
    (dict(limit="2"), TypeError, "limit must be an integer or None"),
    (dict(batch_size=True), TypeError, "batch_size must be an integer"),
    (dict(batch_size=0), ValueError, "batch_size must be at least 1"),
    (dict(flops_images=-1), ValueError, "flops_images must be at least 1"),
    (dict(warmup=1.5), TypeError, "warmup must be an integer"),
    (dict(timed=0), ValueError, "timed must be at least 1"),
    (dict(pause="3:0.4", pause_mode="random", seed=-1), ValueError, "seed must be at least 0, got -1"),
    (dict(pause="3:0.4", pause_mode="random", seed="1"), TypeError, "seed must be an integer"),
    (dict(pause="3:0.4", pause_mode="random", seed=2 ** 32), ValueError, "seed must be at most 4294967295"),
    (dict(pause=3), TypeError, "pause must be a PausePlan, a spec like '3:0.4,5:0.3' or None, got 3 "),
    (dict(pause=((3, 0.4),)), TypeError, "pause must be a PausePlan"),
    (dict(pause="3:x"), ValueError, "is not layer:ratio"),
    (dict(pause="3:0.4", pause_mode=1), TypeError, "pause_mode must be one of entropy, random, got 1"),
    (dict(pause_mode="random"), ValueError, "pause_mode chooses which tokens pause: it needs pause"),
    (dict(gate=3), TypeError, r"gate must be 'auto', 'latest', 'none' or a gate file, got 3 \(int\)"),
    (dict(gate=""), ValueError, "gate must be 'auto', 'latest', 'none' or a gate file, got ''"),
    (dict(data=3), TypeError, r"data must be a --data spec \(a name or a path\) or None, got 3"),
    (dict(device="tpu"), ValueError, "device='tpu' is not a device"),
    (dict(device=1), TypeError, "device must be auto, cpu, cuda, cuda:N or a torch.device"),
    (pytest.param(dict(device="cuda"), ValueError, "device='cuda': CUDA is not available", marks=NO_CUDA)),
    (dict(bootstrap=10), ValueError, "unknown option"),
    (dict(beta=0.001), ValueError, "beta sets the oracle gate's trade-off: it needs gate='oracle'"),
    (dict(gate="oracle"), ValueError, r"gate='oracle' needs beta \(e.g. beta=0.0005\)"),
    (dict(gate="oracle", beta="0.1"), TypeError, r"beta must be a finite number >= 0, got '0.1' \(str\)"),
    (dict(gate="oracle", beta=True), TypeError, "beta must be a finite number >= 0, got True"),
    (dict(gate="oracle", beta=-0.5), ValueError, "beta must be a finite number >= 0, got -0.5"),
    (dict(gate="oracle", beta=float("nan")), ValueError, "beta must be a finite number >= 0, got nan"),
    (dict(gate="oracle", beta=0.001, exit=3), ValueError, "gate='oracle' picks each image's exit: it excludes exit"),
])
def test_evaluate_refuses_before_reading_the_run(kwargs, kind, match):
    with pytest.raises(kind, match=match) as info:
        adaseg.evaluate(MISSING, **kwargs)
    _one_line(info.value)


@pytest.mark.parametrize("run", [3, None, b"runs/default"])
def test_evaluate_and_load_run_refuse_a_run_that_is_not_a_path(run):
    for call in (adaseg.evaluate, adaseg.load_run):
        with pytest.raises(TypeError, match="run must be a run directory"):
            call(run)


@pytest.mark.parametrize("kwargs,kind,match", [
    (dict(gate=3), TypeError, "gate must be"),
    (dict(device="tpu"), ValueError, "device='tpu' is not a device"),
    (pytest.param(dict(device="cuda:0"), ValueError, "CUDA is not available", marks=NO_CUDA)),
])
def test_load_run_refuses_before_reading_the_run(kwargs, kind, match):
    with pytest.raises(kind, match=match):
        adaseg.load_run(MISSING, **kwargs)


@NO_CUDA
def test_load_parent_refuses_cuda_before_reading(tmp_path):
    with pytest.raises(ValueError, match="device='cuda': CUDA is not available"):
        adaseg.load_parent(tmp_path / "missing.safetensors", device="cuda")


# ---------------------------------------------------------------------------- Predictor

@pytest.mark.parametrize("kwargs,kind,param,match", [
    (dict(exit="3"), PredictTypeError, "exit", r"exit must be an integer or None, got '3' \(str\)"),
    (dict(exit=True), PredictTypeError, "exit", "exit must be an integer or None"),
    (dict(exit=0), PredictError, "exit", "exit must be at least 1, got 0"),
    (dict(batch_size="2"), PredictTypeError, "batch-size", r"batch_size must be an integer, got '2' \(str\)"),
    (dict(batch_size=0), PredictError, "batch-size", "batch_size must be at least 1, got 0"),
    (dict(batch_size=2.0), PredictTypeError, "batch-size", "batch_size must be an integer"),
    (dict(seed=-1), PredictError, "seed", "seed must be at least 0"),
    (dict(seed="0"), PredictTypeError, "seed", "seed must be an integer"),
    (dict(seed=2 ** 32, pause="2:0.5", pause_mode="random"), PredictError, "seed", "seed must be at most 4294967295"),
    (dict(seed=3), PredictError, "seed", "seed seeds random pausing only"),
    (dict(pause=3), PredictTypeError, "pause", "pause must be a PausePlan, a spec like"),
    (dict(pause="3:1.5"), PredictError, "pause", r"pause ratio must be in \(0, 1\)"),
    (dict(pause="2:0.5", pause_mode="lowest"), PredictError, "pause-mode", "pause_mode must be one of entropy, random"),
    (dict(pause="2:0.5", pause_mode=None), PredictTypeError, "pause-mode", "pause_mode must be one of"),
    (dict(pause_mode="random"), PredictError, "pause-mode", "pause_mode='random' .* needs pause"),
    (dict(task="depth"), PredictError, "task", "task must be one of panoptic, semantic, instance or None"),
    (dict(task=1), PredictTypeError, "task", "task must be one of"),
    (dict(flops=1), PredictTypeError, "flops", r"flops must be True or False, got 1 \(int\)"),
    (dict(flops="no"), PredictTypeError, "flops", "flops must be True or False"),
    (dict(gate=None), PredictTypeError, "gate", "gate must be 'auto', 'latest', 'none' or a gate file"),
    (dict(data=3), PredictTypeError, "data", "data must be a --data spec"),
    (dict(device="tpu"), PredictError, "device", "device='tpu' is not a device"),
    (dict(device=0), PredictTypeError, "device", "device must be auto, cpu, cuda"),
    (pytest.param(dict(device="cuda"), PredictError, "device", "device='cuda': CUDA is not available", marks=NO_CUDA)),
])
def test_predictor_refuses_before_loading(kwargs, kind, param, match):
    with pytest.raises(kind, match=match) as info:
        adaseg.Predictor(MISSING, **kwargs)
    assert info.value.param == param
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, TypeError) == (kind is PredictTypeError)
    _one_line(info.value)


@pytest.mark.parametrize("source", [3, None, ""])
def test_predictor_refuses_a_source_that_is_not_a_path(source):
    with pytest.raises(PredictError, match="run_or_checkpoint must be a run directory or a parent checkpoint"):
        adaseg.Predictor(source)


# A real (untrained) parent: the valid forms must predict exactly what the canonical ones do.
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from adaseg.data import build_dataset
    from adaseg.runs.parent import PARENT_KIND, parent_config
    from adaseg.storage.checkpoint import save_checkpoint

    folder = write_folder(tmp_path_factory.mktemp("data") / "synth")
    options = {"num_classes": build_dataset(folder, "val", train=False).meta.num_classes}
    torch.manual_seed(0)
    model = adaseg.create_model("m2f_tiny", **options)
    path = tmp_path_factory.mktemp("parent") / "parent.safetensors"
    save_checkpoint(path, model.state_dict(), kind=PARENT_KIND, config=parent_config("m2f_tiny", options))
    return path, folder


def test_predictor_valid_forms_predict_the_same(checkpoint):
    path, folder = checkpoint
    image = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    ref = adaseg.Predictor(str(path), data=folder, exit=2, pause="1:0.5", flops=False)([image])[0]
    same = adaseg.Predictor(path, data=folder, exit=np.int64(2), pause=PausePlan(((1, 0.5),)),
                            device=" CPU ", flops=False)([image])[0]
    assert same.exit == ref.exit == 2
    assert np.array_equal(same.semantic, ref.semantic)
    predictor = adaseg.Predictor(path, data=folder, flops=False)
    dataset = predictor.dataset("val")
    assert len(predictor.predict_dataset(dataset, [np.int64(0)])) == 1
    with pytest.raises(PredictError, match="split must be one of train, val, got 'test'"):
        predictor.dataset("test")
    with pytest.raises(PredictTypeError, match="indices must be an integer, got '0'"):
        predictor.predict_dataset(dataset, ["0"])
    with pytest.raises(PredictError, match=rf"indices must be at most {len(dataset) - 1}"):
        predictor.predict_dataset(dataset, [len(dataset)])
    with pytest.raises(PredictTypeError, match="indices must be an iterable"):
        predictor.predict_dataset(dataset, 3)
    with pytest.raises(PredictTypeError, match="dataset must be a SegmentationDataset"):
        predictor.predict_dataset([image])
