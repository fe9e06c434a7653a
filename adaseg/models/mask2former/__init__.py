"""Mask2Former with the adaptive encoder: model, criterion, post-processing, builders.

Parameter layout (for weight import): ``backbone.*`` is the backbone; ``pixel_decoder.*`` and
``predictor.*`` follow facebookresearch/Mask2Former's ``sem_seg_head.pixel_decoder.*`` and
``sem_seg_head.predictor.*`` one to one (``input_proj.{l}.{0,1}`` lowest resolution first,
``transformer.level_embed``, ``transformer.encoder.layers.{i}.{self_attn,norm1,linear1,linear2,
norm2}``, ``adapter_1``/``layer_1`` with ``.norm``, ``mask_features``;
``transformer_{self,cross}_attention_layers``, ``transformer_ffn_layers``, ``decoder_norm``,
``query_feat``, ``query_embed``, ``level_embed``, ``class_embed``, ``mask_embed.layers``), with
``nn.MultiheadAttention`` (``in_proj_weight``, ``out_proj``) as in the original. Additions:
``pixel_decoder.transformer.aux_decoders.{l-1}`` (PAUMER's 1x1 decoders after layer l) and,
once attached, ``gate.linear``. The other encoder kinds (``encoder="lite"``/``"rt"``) replace
``pixel_decoder.transformer.*`` only: Lite's ``high_layers.{i}`` and ``all_layer``, RT's ``aifi``,
``lateral_convs``, ``fpn_blocks``, ``downsample_convs``, ``pan_blocks`` (no ``level_embed``).
"""

from adaseg.models.mask2former.criterion import SetCriterion
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
    "postprocess",
    "panoptic_inference",
    "semantic_inference",
    "instance_inference",
]
