"""Vectorised numpy drawing primitives for the synthetic generator: noise, textures, shapes.

Every function takes an explicit ``numpy.random.Generator`` so images are deterministic
from (seed, index). Shapes return (H, W) bool masks computed on the full pixel grid.
"""

from __future__ import annotations

import colorsys

import numpy as np


def value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """(h, w) smooth noise, roughly N(0, 1/2): random values on a grid of spacing ``cell``
    pixels, smoothstep-interpolated."""
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    g = rng.standard_normal((gh, gw))
    y = np.arange(h) / cell
    x = np.arange(w) / cell
    y0, x0 = y.astype(np.int64), x.astype(np.int64)
    fy, fx = y - y0, x - x0
    fy = (fy * fy * (3 - 2 * fy))[:, None]
    fx = (fx * fx * (3 - 2 * fx))[None, :]
    a = g[y0][:, x0]
    b = g[y0][:, x0 + 1]
    c = g[y0 + 1][:, x0]
    d = g[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0, 1] -> RGB float (3,) on 0-255."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))) * 255.0


def rotated_coords(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, theta: float):
    """Pixel coordinates in the frame of an object centred at (cy, cx) rotated by theta."""
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(theta), np.sin(theta)
    return c * dx + s * dy, -s * dx + c * dy  # (u along the object's x axis, v along its y axis)


def shape_mask(kind: str, yy: np.ndarray, xx: np.ndarray, *, cy: float, cx: float, r: float,
               theta: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W) bool mask of one shape of characteristic radius ``r`` pixels."""
    u, v = rotated_coords(yy, xx, cy, cx, theta)
    if kind == "disc":
        a, b = r, r * rng.uniform(0.75, 1.0)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    if kind == "box":
        a, b = r * rng.uniform(0.65, 1.0), r * rng.uniform(0.65, 1.0)
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    if kind == "triangle":
        # intersection of three half-planes whose normals point at 120 degrees apart
        rr = r * rng.uniform(0.55, 0.7)
        m = np.ones_like(u, dtype=bool)
        for k in range(3):
            ang = 2 * np.pi * k / 3
            m &= u * np.cos(ang) + v * np.sin(ang) <= rr
        return m
    if kind == "ring":
        rho2 = u * u + v * v
        inner = r * rng.uniform(0.45, 0.6)
        return (rho2 <= r * r) & (rho2 >= inner * inner)
    if kind == "cross":
        arm = r * rng.uniform(0.28, 0.38)
        return ((np.abs(u) <= r) & (np.abs(v) <= arm)) | ((np.abs(v) <= r) & (np.abs(u) <= arm))
    raise ValueError(f"unknown shape kind {kind!r}")


def shape_mask_full(kind: str, yy: np.ndarray, xx: np.ndarray, *, cy: float, cx: float, r: float,
                    theta: float, rng: np.random.Generator) -> np.ndarray:
    """:func:`shape_mask` evaluated only inside the shape's bounding window (every shape fits in
    a radius of 1.5 r), embedded in a full (H, W) mask. Same random draws, same result."""
    h, w = yy.shape
    reach = 1.5 * r + 1.0
    y0, y1 = max(0, int(np.floor(cy - reach))), min(h, int(np.ceil(cy + reach)) + 1)
    x0, x1 = max(0, int(np.floor(cx - reach))), min(w, int(np.ceil(cx + reach)) + 1)
    y1, x1 = max(y0, y1), max(x0, x1)
    out = np.zeros((h, w), dtype=bool)
    out[y0:y1, x0:x1] = shape_mask(kind, yy[y0:y1, x0:x1], xx[y0:y1, x0:x1], cy=cy, cx=cx, r=r, theta=theta,
                                   rng=rng)
    return out


def brick_texture(rng: np.random.Generator, h: int, w: int, base: np.ndarray, jitter: float) -> np.ndarray:
    """(h, w, 3) brick wall: per-brick colour jitter, light mortar lines, offset rows."""
    bh = int(rng.integers(5, 9))
    bw = int(rng.integers(2, 4)) * bh
    yy, xx = np.mgrid[0:h, 0:w]
    row = yy // bh
    col = (xx + (row % 2) * (bw // 2)) // bw
    brick_id = row * 1000 + col
    # a hash of the brick id gives each brick its own shade without a Python loop
    shade = ((brick_id * 2654435761) % 1000) / 1000.0 - 0.5
    img = base[None, None, :] * (1.0 + jitter * shade[..., None])
    mortar = ((yy % bh) == 0) | (((xx + (row % 2) * (bw // 2)) % bw) == 0)
    img[mortar] = 0.55 * img[mortar] + 0.45 * 210.0
    return img
