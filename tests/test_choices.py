"""The shared option values: torch-free, and what the code that takes them accepts."""

import subprocess
import sys

import pytest

from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg import choices


def test_choices_are_what_the_code_accepts():
    for mode in choices.PAUSE_MODES:
        assert AdaptiveSettings(pause="1:0.5", pause_mode=mode).pause_mode == mode
    with pytest.raises(ValueError):
        AdaptiveSettings(pause="1:0.5", pause_mode="lowest")
    assert set(choices.TASKS) == {"panoptic", "semantic", "instance"}
    assert set(choices.SPLITS) == {"train", "val"}
    assert set(choices.RECIPES) == {"standard", "wsd", "pause", "wsd+pause"}
    assert choices.RECIPES[0] == "wsd+pause"  # train-parent's default is listed first


def test_choices_import_no_torch():
    code = "import sys, adaseg.choices; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
