"""What an imported checkpoint says about itself besides its weights, so it is usable alone:
its categories (names, thing/stuff), the parts of the model it did not train, and the image
resize it was made for.

Written into the checkpoint's ``extra`` by ``adaseg import-weights --hf`` and read back by
:mod:`adaseg.runs.from_checkpoint` (predictions labelled without a dataset on disk, pausing
refused while the auxiliary decoders are untrained).

* ``categories``: ``[{"id", "name", "isthing"}]`` in contiguous order. ``id`` is the HF label
  id (``id2label``'s key, 0..K-1): what prediction files of the checkpoint alone carry.
  ``name`` is ``id2label``'s value. HF configs do not record thing/stuff: it comes from
  ``--thing-ids`` or from a label set adaseg recognises (COCO panoptic's 133, Cityscapes' 19;
  :func:`adaseg.models.hf.config.default_thing_ids`).
* ``untrained``: ``["aux_decoders"]`` -- PAUMER's per-layer auxiliary decoders have no HF
  counterpart and keep their initial values, so entropy pausing on this model would rank
  tokens by noise.
* ``eval_transform``: ``{"short", "max_size"}``, the shorter-side resize of the checkpoint's
  ``preprocessor_config.json`` (``size.shortest_edge`` / ``size.longest_edge``) when it has
  one, else transformers' Mask2Former default, 800 / 1333 (also Mask2Former's COCO test size).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# transformers' Mask2FormerImageProcessor default size
DEFAULT_EVAL = {"short": 800, "max_size": 1333}
UNTRAINED_AUX = "aux_decoders"


def categories(class_names: list[str], thing_ids) -> list[dict[str, Any]]:
    """``[{"id", "name", "isthing"}]`` in contiguous order (``id`` = the HF label id)."""
    things = {int(t) for t in thing_ids}
    return [{"id": i, "name": str(n), "isthing": i in things} for i, n in enumerate(class_names)]


def eval_transform(directory: Path) -> dict[str, int]:
    """The resize of ``directory/preprocessor_config.json`` when it gives a shorter and a longer
    side (ints), else :data:`DEFAULT_EVAL`. A malformed file is ignored for the default: the
    model's weights do not depend on it."""
    path = Path(directory) / "preprocessor_config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return dict(DEFAULT_EVAL)
    size = cfg.get("size") if isinstance(cfg, dict) else None
    if isinstance(size, dict):
        short, long = size.get("shortest_edge"), size.get("longest_edge")
        if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (short, long)):
            return {"short": short, "max_size": long}
    return dict(DEFAULT_EVAL)


def describe(*, class_names: list[str], thing_ids, initialised: list[str], directory: Path) -> dict[str, Any]:
    """The ``extra`` entries above for one import (``initialised``: adaseg keys the HF
    checkpoint did not provide; any of them makes the auxiliary decoders untrained)."""
    return {
        "categories": categories(class_names, thing_ids),
        "untrained": [UNTRAINED_AUX] if initialised else [],
        "eval_transform": eval_transform(directory),
    }
