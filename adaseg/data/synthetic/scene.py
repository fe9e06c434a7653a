"""One procedurally generated panoptic scene.

Categories (dataset ids; contiguous ids follow the sorted ids):

====  ========  =====  ==================================================================
 id   name      thing  appearance
====  ========  =====  ==================================================================
  1   disc      yes    ellipse, red-orange hue, radial shading
  2   box       yes    rotated rectangle, blue hue, dark border
  3   triangle  yes    rotated triangle, yellow-green hue
  4   ring      yes    annulus (background shows through the hole), magenta hue
  5   cross     yes    rotated plus sign, cyan hue
 10   sky       no     top of the frame, blue gradient + cloud noise
 11   grass     no     bottom of the frame, green + fine noise
 12   wall      no     brick pattern (a building across the horizon, or the whole top)
 13   road      no     grey band through the bottom part, fine noise
====  ========  =====  ==================================================================

Difficulty ``d`` ~ U(0, 1) per image drives everything at once: number of objects (1 ..
~13), their size (a third of the frame .. a few pixels), how far their colours drift from
their class hue (so shape, not colour, must decide), contrast against the background,
texture noise, stuff clutter (object-like blobs that belong to the stuff), touching
same-class clusters, and crowd regions. Easy images are one big object on a plain
background; hard ones are a dozen small, low-contrast, occluding objects on clutter.
"""

from __future__ import annotations

import numpy as np

from adaseg.data.synthetic.draw import brick_texture, hsv, shape_mask_full, value_noise

THINGS = ((1, "disc", 0.02), (2, "box", 0.62), (3, "triangle", 0.20), (4, "ring", 0.85), (5, "cross", 0.50))
STUFF = ((10, "sky"), (11, "grass"), (12, "wall"), (13, "road"))
SKY, GRASS, WALL, ROAD = 10, 11, 12, 13
MIN_VISIBLE = 12  # px; a thing occluded down to fewer visible pixels becomes void


def categories_json() -> list[dict]:
    """COCO-panoptic ``categories`` of the synthetic set (colour = display colour)."""
    cats = [{"id": cid, "name": name, "isthing": 1, "supercategory": "shape",
             "color": [int(v) for v in hsv(hue, 0.9, 0.95)]} for cid, name, hue in THINGS]
    colors = {SKY: [110, 160, 230], GRASS: [60, 150, 60], WALL: [150, 80, 60], ROAD: [90, 90, 90]}
    cats += [{"id": cid, "name": name, "isthing": 0, "supercategory": "stuff", "color": colors[cid]}
             for cid, name in STUFF]
    return cats


def make_scene(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray, list[dict], float]:
    """-> image (size, size, 3) uint8, ids (size, size) int64 panoptic ids (0 = void),
    segments_info (COCO panoptic, dataset category ids), difficulty in [0, 1]."""
    rng = np.random.default_rng([seed, index])
    d = float(rng.uniform())
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    stuff, image = _stuff(rng, d, yy, xx)
    ids = stuff * 1000  # stuff segment id = category id * 1000
    bg_mean = {int(c): image[stuff == c].mean(axis=0) for c in np.unique(stuff)}

    thing_cat = {}  # segment id -> category id
    crowd_ids = set()
    if rng.uniform() < 0.25 * d:
        cid, _, hue = THINGS[int(rng.integers(len(THINGS)))]
        m = np.zeros((h, w), dtype=bool)
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        color = hsv(hue + rng.normal(0, 0.04), rng.uniform(0.6, 0.9), rng.uniform(0.6, 0.9))
        for _ in range(int(rng.integers(6, 13))):
            r = rng.uniform(0.012, 0.025) * size + 1.0
            m |= shape_mask_full(THINGS[cid - 1][1], yy, xx, cy=cy + rng.normal(0, 0.06 * h),
                            cx=cx + rng.normal(0, 0.06 * w), r=r, theta=rng.uniform(0, np.pi), rng=rng)
        seg_id = cid * 1000 + 999
        ids[m] = seg_id
        image[m] = color + rng.normal(0, 8, size=(int(m.sum()), 3))
        thing_cat[seg_id] = cid
        crowd_ids.add(seg_id)

    n_obj = int(np.clip(round((1 + 12 * d) * rng.uniform(0.7, 1.3)), 1, 16))
    big, small = np.array([0.20, 0.34]), np.array([0.035, 0.09])
    lo, hi = (1 - d) * big + d * small
    prev = None
    for k in range(1, n_obj + 1):
        if prev is not None and rng.uniform() < 0.7 * d:
            # touching instance of the same class, placed next to the previous one
            cls = prev[0]
            r = prev[3] * rng.uniform(0.8, 1.2)
            ang = rng.uniform(0, 2 * np.pi)
            dist = (prev[3] + r) * rng.uniform(0.75, 0.95)
            cy, cx = prev[1] + dist * np.sin(ang), prev[2] + dist * np.cos(ang)
        else:
            cls = int(rng.integers(len(THINGS)))
            r = rng.uniform(lo, hi) * size
            cy, cx = rng.uniform(0.05, 0.95) * h, rng.uniform(0.05, 0.95) * w
        cid, kind, hue = THINGS[cls]
        m = shape_mask_full(kind, yy, xx, cy=cy, cx=cx, r=r, theta=rng.uniform(0, 2 * np.pi), rng=rng)
        if not m.any():
            continue
        seg_id = cid * 1000 + k
        ids[m] = seg_id
        thing_cat[seg_id] = cid
        image[m] = _thing_pixels(rng, d, kind, hue, yy[m], xx[m], cy, cx, r, bg_mean)
        prev = (cls, cy, cx, r)

    image += rng.normal(0, 2 + 10 * d, size=image.shape)
    image = image * rng.uniform(1 - 0.3 * d, 1 + 0.1 * d) + rng.uniform(-20, 20) * d
    image = np.clip(image, 0, 255).astype(np.uint8)

    segments = []
    seg_ids, counts = np.unique(ids, return_counts=True)
    for seg_id, area in zip(seg_ids.tolist(), counts.tolist()):
        if seg_id in thing_cat and seg_id not in crowd_ids and area < MIN_VISIBLE:
            ids[ids == seg_id] = 0  # an occluded sliver is unlabeled, as in COCO
            continue
        m = ids == seg_id
        cid = thing_cat.get(seg_id, seg_id // 1000)
        ys, xs = np.nonzero(m)
        x0, y0 = int(xs.min()), int(ys.min())
        segments.append({"id": int(seg_id), "category_id": int(cid), "iscrowd": int(seg_id in crowd_ids),
                         "area": int(area), "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]})
    return image, ids, segments, d


def _stuff(rng: np.random.Generator, d: float, yy: np.ndarray, xx: np.ndarray):
    """Stuff label map (H, W) of category ids and the textured background (H, W, 3) float."""
    h, w = yy.shape
    noise_amp = 6 + 30 * d
    horizon = (rng.uniform(0.3, 0.65) * h + rng.uniform(-0.25, 0.25) * (xx[0] - w / 2)
               + rng.uniform(0, 0.05 * h) * np.sin(xx[0] / w * rng.uniform(2, 8) + rng.uniform(0, 6)))
    top = yy < horizon[None, :]
    stuff = np.where(top, WALL if rng.uniform() < 0.2 else SKY, GRASS)
    if rng.uniform() < 0.35 + 0.3 * d:  # a building crossing the horizon
        x0, x1 = sorted(rng.uniform(0, 1, 2) * w)
        top_y = rng.uniform(0.05, 0.35) * h
        bottom = horizon + rng.uniform(0.0, 0.15) * h
        stuff[(xx >= x0) & (xx <= x1 + 8) & (yy >= top_y) & (yy < bottom[None, :])] = WALL
    if rng.uniform() < 0.5:  # a road band through the ground
        c0, c1 = rng.uniform(-0.3, 1.3, 2) * w
        half = rng.uniform(0.06, 0.2) * w
        centre = c0 + (c1 - c0) * (yy / h)
        stuff[(np.abs(xx - centre) < half * (0.4 + yy / h)) & (~top)] = ROAD

    jit = 0.03 + 0.12 * d  # hue drift of stuff colours with difficulty
    img = np.empty((h, w, 3))
    sky = hsv(0.58 + rng.normal(0, jit), rng.uniform(0.35, 0.65), rng.uniform(0.8, 0.95))
    grad = (yy / h)[..., None] * 40
    clouds = np.clip(value_noise(rng, h, w, h / 4), 0, None)[..., None] * rng.uniform(20, 60)
    present = set(np.unique(stuff).tolist())
    layers = {
        SKY: lambda: sky[None, None] + grad + clouds,
        GRASS: lambda: hsv(0.30 + rng.normal(0, jit), rng.uniform(0.5, 0.8), rng.uniform(0.45, 0.7))[None, None]
        + noise_amp * value_noise(rng, h, w, 1.5)[..., None]
        + 15 * value_noise(rng, h, w, 8)[..., None],
        WALL: lambda: brick_texture(rng, h, w, hsv(0.05 + rng.normal(0, jit), rng.uniform(0.3, 0.6),
                                                   rng.uniform(0.45, 0.7)), jitter=0.25 + 0.3 * d),
        ROAD: lambda: np.full((h, w, 3), rng.uniform(70, 110)) + noise_amp * value_noise(rng, h, w, 1.0)[..., None],
    }
    for cid, layer in layers.items():  # only the classes present are textured
        if cid in present:
            m = stuff == cid
            img[m] = layer()[m]
    # clutter: blobs that belong to the stuff they sit on (not things), more when hard
    for _ in range(int(rng.poisson(10 * d * d))):
        m = shape_mask_full("disc", yy, xx, cy=rng.uniform(0, h), cx=rng.uniform(0, w),
                       r=rng.uniform(0.02, 0.06) * h, theta=rng.uniform(0, np.pi), rng=rng)
        img[m] = 0.5 * img[m] + 0.5 * hsv(rng.uniform(), rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.9))
    return stuff, img


def _thing_pixels(rng, d, kind, hue, ys, xs, cy, cx, r, bg_mean) -> np.ndarray:
    """(n, 3) colours of a thing's pixels: class hue (drifting with difficulty), shading."""
    if rng.uniform() < 0.5 * d:
        hue = rng.uniform()  # off-palette colour: only the shape tells the class
    else:
        hue = hue + rng.normal(0, 0.03 + 0.05 * d)
    color = hsv(hue, rng.uniform(0.55, 0.95), rng.uniform(0.55, 0.95))
    back = np.mean(list(bg_mean.values()), axis=0)
    color = color + rng.uniform(0, 0.6 * d) * (back - color)  # lower contrast when hard
    px = np.broadcast_to(color, (len(ys), 3)).copy()
    rho = np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2) / max(r, 1.0)
    if kind == "disc":
        px *= (1.15 - 0.35 * np.clip(rho, 0, 1))[:, None]  # sphere-like radial shading
    elif kind == "box":
        px[rho > 0.8] *= 0.6  # darker border band
    else:
        g = ((ys - cy) * 0.5 + (xs - cx)) / max(r, 1.0)
        px *= (1.0 + 0.12 * g)[:, None]
    return px + rng.normal(0, 3 + 8 * d, size=px.shape)
