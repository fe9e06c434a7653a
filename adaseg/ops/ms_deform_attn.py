"""Dispatcher for multi-scale deformable attention.

For now only the pure-PyTorch reference exists; the compiled extension
(``adaseg._C``, registered as ``torch.ops.adaseg.ms_deform_attn``) plugs in here.
"""

from __future__ import annotations

import torch

from adaseg.ops import reference


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention; see :func:`adaseg.ops.reference.ms_deform_attn`.

    Shapes: value (N, S, M, D); spatial_shapes (L, 2); level_start_index (L,);
    sampling_locations (N, Lq, M, L, P, 2) in [0, 1]; attention_weights (N, Lq, M, L, P)
    -> (N, Lq, M*D).
    """
    return reference.ms_deform_attn(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    )
