"""The shared option values: torch-free, and equal to the sets the models and data check."""

import subprocess
import sys

from adaseg.data.build import SPLITS as DATA_SPLITS
from adaseg.models.mask2former.postprocess import TASKS as MODEL_TASKS
from adaseg.models.pause_selection import PAUSE_MODES as MODEL_PAUSE_MODES
from adaseg.recipes import choices


def test_choices_match_what_the_models_and_data_accept():
    assert choices.PAUSE_MODES == MODEL_PAUSE_MODES
    assert choices.TASKS == MODEL_TASKS
    assert choices.SPLITS == DATA_SPLITS
    assert set(choices.RECIPES) == {"standard", "wsd", "pause", "wsd+pause"}
    assert choices.RECIPES[0] == "wsd+pause"  # train-parent's default is listed first


def test_choices_import_no_torch():
    code = "import sys, adaseg.recipes.choices; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
