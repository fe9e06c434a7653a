"""Model registry: a name maps to one small builder function.

Builders take keyword-only settings with defaults; ``create_model(name, **overrides)``
passes overrides through and rejects any key the builder does not accept, so a config value
is never silently ignored. Builders are imported lazily (``"module:function"``) so listing
names stays cheap and a model family whose module is missing fails only when it is built.
"""

from __future__ import annotations

import importlib
import inspect

_M2F = "adaseg.models.mask2former.configs"

# name -> "module:function"; add a family by adding lines here
_BUILDERS: dict[str, str] = {
    "m2f_r50": f"{_M2F}:m2f_r50",
    "m2f_swin_t": f"{_M2F}:m2f_swin_t",
    "m2f_swin_s": f"{_M2F}:m2f_swin_s",
    "m2f_swin_b": f"{_M2F}:m2f_swin_b",
    "m2f_tiny": f"{_M2F}:m2f_tiny",
    # Lite-M2F / RT-M2F: Mask2Former with Lite-DETR's or RT-DETR's encoder (issue 21)
    "m2f_lite_swin_t": f"{_M2F}:m2f_lite_swin_t",
    "m2f_lite_r50": f"{_M2F}:m2f_lite_r50",
    "m2f_lite_tiny": f"{_M2F}:m2f_lite_tiny",
    "m2f_rt_swin_t": f"{_M2F}:m2f_rt_swin_t",
    "m2f_rt_r50": f"{_M2F}:m2f_rt_r50",
    "m2f_rt_tiny": f"{_M2F}:m2f_rt_tiny",
    "segmenter_vit_ti": "adaseg.models.segmenter.configs:segmenter_vit_ti",
    "segmenter_vit_s": "adaseg.models.segmenter.configs:segmenter_vit_s",
    "segmenter_tiny": "adaseg.models.segmenter.configs:segmenter_tiny",
    # SETR-PUP with PAUMER (issue 22, PAUMER App. J)
    "setr_pup_vit_ti": "adaseg.models.setr.configs:setr_pup_vit_ti",
    "setr_tiny": "adaseg.models.setr.configs:setr_tiny",
    "detr_r50": "adaseg.models.detr.configs:detr_r50",
    "detr_tiny": "adaseg.models.detr.configs:detr_tiny",
}


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_BUILDERS)


def get_builder(name: str):
    """The builder function registered under ``name``."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    module_name, _, func_name = _BUILDERS[name].partition(":")
    return getattr(importlib.import_module(module_name), func_name)


def model_options(name: str) -> dict:
    """``{option: default}`` a model accepts as overrides."""
    params = inspect.signature(get_builder(name)).parameters
    return {k: p.default for k, p in params.items() if p.kind == inspect.Parameter.KEYWORD_ONLY}


def create_model(name: str, **overrides):
    """Build model ``name`` with ``overrides`` replacing builder defaults.

    Raises:
        ValueError: unknown name, or an override the builder does not accept (listing the
            accepted options).
    """
    builder = get_builder(name)
    accepted = model_options(name)
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(
            f"model {name!r} has no option(s) {', '.join(unknown)}; accepted: {', '.join(sorted(accepted))}"
        )
    return builder(**overrides)


def pause_refusal(name: str) -> str | None:
    """Why model ``name`` cannot pause tokens (PAUMER), or None: its ``pause_refusal``, read from
    the model built with its defaults on the meta device (no weights allocated or initialised),
    so that a command refuses a pausing recipe before it builds anything or writes a file."""
    import torch

    with torch.device("meta"):
        model = create_model(name)
    return getattr(model, "pause_refusal", None)
