"""Random inputs for multi-scale deformable attention, shared by the tests and the benchmark."""

from __future__ import annotations

import torch

LOCATION_MODES = ("inside", "outside", "borders", "encoder")


def level_start_index(spatial_shapes: torch.Tensor) -> torch.Tensor:
    """(L, 2) int64 (H, W) -> (L,) int64 exclusive prefix sum of H*W."""
    sizes = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])


def make_msda_inputs(
    *,
    batch: int,
    queries: int,
    heads: int,
    head_dim: int,
    shapes: list[tuple[int, int]],
    points: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    locations: str = "inside",
    margin: float = 1e-3,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs of ``ms_deform_attn`` for N=batch, Lq=queries, M=heads, D=head_dim, L=len(shapes), P=points.

    Args:
        shapes: (H, W) of each level.
        locations: ``inside`` draws locations in [0, 1]; ``outside`` in [-0.25, 1.25], so some
            points fall partly or wholly outside their level; ``borders`` puts every point
            exactly on pixel coordinates where bilinear sampling changes regime (-1.5, -1,
            -0.5, 0, 0.5, W-1, W-0.5, W, W+0.5 ...): exact in binary floating point, which
            needs power-of-two H and W.
            ``encoder`` is the pattern of a deformable encoder: query i is token i (so
            ``queries`` must equal S), its reference point the token's centre on every
            level, and head m's point p lies p+1 pixels along the ray at angle 2*pi*m/M
            (MSDeformAttn's initial offsets) plus Gaussian noise of 0.5 pixel.
        margin: for ``inside``/``outside``, the pixel coordinates keep at least this distance
            from integers, where bilinear interpolation has kinks and two correct
            implementations may round to different sides (gradients differ there).
        seed: seeds a private generator (the global RNG is untouched).

    Returns:
        value (N, S, M, D), spatial_shapes (L, 2) int64, level_start_index (L,) int64,
        sampling_locations (N, Lq, M, L, P, 2), attention_weights (N, Lq, M, L, P).
    """
    if locations not in LOCATION_MODES:
        raise ValueError(f"locations must be one of {LOCATION_MODES}, got {locations!r}")
    gen = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.int64).reshape(-1, 2)
    s = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
    n_levels = spatial_shapes.shape[0]
    value = torch.randn(batch, s, heads, head_dim, generator=gen, dtype=torch.float64)
    weights = torch.rand(batch, queries, heads, n_levels, points, generator=gen, dtype=torch.float64)
    loc_shape = (batch, queries, heads, n_levels, points)
    # (L, 2) sizes as (W, H) to match the (x, y) order of the locations.
    size_xy = torch.stack([spatial_shapes[:, 1], spatial_shapes[:, 0]], -1).to(torch.float64)
    size_xy = size_xy.view(1, 1, 1, n_levels, 1, 2)
    if locations == "borders":
        for h, w in shapes:
            if h & (h - 1) or w & (w - 1) or h == 0 or w == 0:
                raise ValueError(f"locations='borders' needs power-of-two level sizes, got {(h, w)}")
        offsets = torch.tensor([-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0], dtype=torch.float64)
        # Half of the points measure from the near edge (pixel -2 .. 1), half from the far one
        # (W-2 .. W+1), so both borders and the first/last pixel rows are exercised.
        pick = torch.randint(0, len(offsets), (*loc_shape, 2), generator=gen)
        far = torch.randint(0, 2, (*loc_shape, 2), generator=gen).to(torch.float64)
        pixel = offsets[pick] + far * (size_xy - 1.0)
        loc = (pixel + 0.5) / size_xy
    elif locations == "encoder":
        if queries != s:
            raise ValueError(f"locations='encoder' needs queries == S ({s}), got {queries}")
        centres = []
        for h, w in shapes:
            ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
            centres.append(torch.stack([(xs.flatten() + 0.5) / w, (ys.flatten() + 0.5) / h], -1))
        ref = torch.cat(centres).view(1, s, 1, 1, 1, 2)
        theta = torch.arange(heads, dtype=torch.float64) * (2 * torch.pi / heads)
        ray = torch.stack([theta.cos(), theta.sin()], -1)
        ray = ray / ray.abs().max(-1, keepdim=True).values
        steps = torch.arange(1, points + 1, dtype=torch.float64).view(1, 1, 1, 1, points, 1)
        pixels = ray.view(1, 1, heads, 1, 1, 2) * steps + 0.5 * torch.randn(*loc_shape, 2, generator=gen, dtype=torch.float64)
        loc = ref + pixels / size_xy
        pixel = loc * size_xy - 0.5
        base = pixel.floor()
        loc = (base + (pixel - base).clamp(margin, 1.0 - margin) + 0.5) / size_xy
    else:
        low, high = (0.0, 1.0) if locations == "inside" else (-0.25, 1.25)
        loc = low + (high - low) * torch.rand(*loc_shape, 2, generator=gen, dtype=torch.float64)
        pixel = loc * size_xy - 0.5
        base = pixel.floor()
        frac = (pixel - base).clamp(margin, 1.0 - margin)
        loc = (base + frac + 0.5) / size_xy
    out = (value, spatial_shapes, level_start_index(spatial_shapes), loc, weights)
    device = torch.device(device)
    return tuple(t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device) for t in out)
