"""The reference implementations the tests compare against (pycocotools, cityscapesscripts,
scipy) are install requirements (setup.py's install_requires): a missing oracle fails the suite
here with one clear line, instead of its tests being skipped."""

from __future__ import annotations

import importlib

import pytest

ORACLES = [
    "pycocotools.mask",
    "pycocotools.coco",
    "pycocotools.cocoeval",
    "cityscapesscripts.evaluation.evalPanopticSemanticLabeling",
    "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
    "cityscapesscripts.preparation.createPanopticImgs",
    "cityscapesscripts.helpers.labels",
    "scipy.stats",
]


@pytest.mark.parametrize("module", ORACLES)
def test_reference_implementation_is_installed(module):
    try:
        importlib.import_module(module)
    except ImportError as err:
        pytest.fail(f"{module} (a test oracle and an install requirement) cannot be imported: {err}; "
                    "pip install --no-build-isolation -e '.[test]'", pytrace=False)
