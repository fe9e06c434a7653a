"""Mask2Former with the adaptive encoder: model, criterion, post-processing, builders."""

from adaseg.models.mask2former.criterion import SetCriterion, aux_decoder_loss
from adaseg.models.mask2former.matcher import HungarianMatcher
from adaseg.models.mask2former.model import Mask2Former
from adaseg.models.mask2former.postprocess import (
    instance_inference,
    panoptic_inference,
    postprocess,
    semantic_inference,
)

__all__ = [
    "Mask2Former",
    "SetCriterion",
    "HungarianMatcher",
    "aux_decoder_loss",
    "postprocess",
    "panoptic_inference",
    "semantic_inference",
    "instance_inference",
]
