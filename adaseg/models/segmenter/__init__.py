"""Segmenter (ViT encoder + mask transformer) with the adaptive-encoder contract: model,
mask decoder, loss, sliding-window inference and registry builders."""

from adaseg.models.segmenter.criterion import SegmenterCriterion
from adaseg.models.segmenter.model import Segmenter
from adaseg.models.segmenter.sliding import segmenter_inference_sliding

__all__ = ["Segmenter", "SegmenterCriterion", "segmenter_inference_sliding"]
