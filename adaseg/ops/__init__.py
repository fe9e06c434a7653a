"""Functional ops. Each fast path has a pure-PyTorch twin in :mod:`adaseg.ops.reference`."""

from adaseg.ops.ms_deform_attn import ms_deform_attn

__all__ = ["ms_deform_attn"]
