"""DETR with an adaptive encoder (ECO-DETR): exits, a gate and PAUMER pausing on DETR's
single-scale transformer encoder."""

from adaseg.models.detr.model import DETR

__all__ = ["DETR"]
