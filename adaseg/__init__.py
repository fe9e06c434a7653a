"""adaseg: segmentation transformers that adapt their compute to each image.

Two methods over one adaptive encoder: per-image early exits chosen by a gate
(ECO-M2F) and per-token pausing driven by an auxiliary decoder's entropy (PAUMER).
"""

__version__ = "0.1.0"


def create_model(name, **overrides):
    """Build a registered model by name (see :func:`list_models`)."""
    from adaseg.models.registry import create_model as _create

    return _create(name, **overrides)


def list_models():
    """Names accepted by :func:`create_model`."""
    from adaseg.models.registry import list_models as _list

    return _list()


# The embedding API, imported on first use so `import adaseg` stays light.
_EXPORTS = {
    "PausePlan": "adaseg.models.adaptive.plan",
    "AdaptiveSettings": "adaseg.models.adaptive.settings",
    "AdaptiveOutput": "adaseg.models.adaptive.output",
    "AdaptiveModel": "adaseg.models.adaptive.protocol",
    "load_run": "adaseg.api",
    "load_parent": "adaseg.api",
    "load_gate": "adaseg.api",
    "evaluate": "adaseg.api",
    "Predictor": "adaseg.predict.predictor",
    "Prediction": "adaseg.predict.result",
}

__all__ = ["create_model", "list_models", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'adaseg' has no attribute {name!r}")
