"""Modules built on adaseg's ops."""

from adaseg.nn.ms_deform_attn import MSDeformAttn

__all__ = ["MSDeformAttn"]
