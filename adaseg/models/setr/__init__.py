"""SETR (Zheng et al., CVPR 2021) with the PUP decoder on a ViT, with the adaptive-encoder
contract (PAUMER App. J): model, decoder and registry builders."""

from adaseg.models.setr.decoder import PUPDecoder
from adaseg.models.setr.model import SETR

__all__ = ["PUPDecoder", "SETR"]
