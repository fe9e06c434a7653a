"""Pictures of a detection model's predictions: the image with each kept box outlined in its
class colour and labelled ``name score``, the exit and GFLOPs written below it, and a legend of
the classes drawn.

A box ``[x0, y0, x1, y1]`` is in pixel-edge coordinates of the image at its own size (x0 the
left edge of the first column it covers, x1 the right edge of the last: a box over columns
2..5 is x0 = 2, x1 = 6), as :func:`adaseg.models.detr.postprocess.scored_boxes` gives them.
On a picture enlarged ``k`` times (:func:`~adaseg.predict.drawing.upscale_factor`) its
outline is :func:`outline_width` pixels wide, drawn inside the box's edges: the outline's
outer pixels are columns ``round(k x0)`` and ``round(k x1) - 1`` and rows ``round(k y0)`` and
``round(k y1) - 1``. The label sits on a tag above the box (below its top edge when the box
touches the top of the picture), so it never covers the outline.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from adaseg.predict.drawing import enlarge, font, summary_line, upscale_factor, with_legend
from adaseg.predict.result import Prediction

# What the overlay draws by default: transformers' post_process_object_detection threshold (Step B's
# per-image box AP50 needs no threshold: it ranks every detection).
DEFAULT_SCORE_THRESHOLD = 0.5


def outline_width(k: int) -> int:
    """Outline width in pixels on a picture enlarged ``k`` times: 2 at native size, ``k`` above."""
    return max(2, int(k))


def box_pixels(box, k: int, size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``(left, top, right, bottom)`` inclusive pixel bounds of ``box`` (xyxy edges at the
    image's size) on the picture enlarged ``k`` times, of size ``k * size`` (H, W); clipped to
    it; None when nothing of the box is left."""
    h, w = size[0] * k, size[1] * k
    x0, y0, x1, y1 = (float(v) * k for v in box)
    left, top = max(0, int(round(x0))), max(0, int(round(y0)))
    right, bottom = min(w, int(round(x1))) - 1, min(h, int(round(y1))) - 1
    if right < left or bottom < top:
        return None
    return left, top, right, bottom


def kept(p: Prediction) -> list[dict]:
    """The detections drawn: those scoring at least ``p.score_threshold``, best first."""
    return sorted((d for d in p.detections or [] if d["score"] >= p.score_threshold), key=lambda d: -d["score"])


def draw_boxes(img: Image.Image, p: Prediction, categories, k: int) -> Image.Image:
    """Draw the kept detections of ``p`` on ``img`` (the image enlarged ``k`` times), the
    lowest score first so the best box is on top. Returns ``img``."""
    colour_of = {c.id: tuple(int(v) for v in c.color) for c in categories}
    name_of = {c.id: c.name for c in categories}
    draw = ImageDraw.Draw(img)
    lw = outline_width(k)
    size = max(10, min(img.width, img.height) // 20)
    f = font(size)
    for d in reversed(kept(p)):
        bounds = box_pixels(d["box"], k, p.size)
        if bounds is None:
            continue
        left, top, right, bottom = bounds
        colour = colour_of.get(d["category_id"], (255, 255, 255))
        draw.rectangle([left, top, right, bottom], outline=colour, width=lw)
        text = f"{name_of.get(d['category_id'], d['category_id'])} {d['score']:.2f}"
        tw, th = int(draw.textlength(text, font=f)) + 4, size + 4
        ty = top - th if top - th >= 0 else top + lw  # above the box, else just inside its top edge
        tx = min(left, max(0, img.width - tw))
        draw.rectangle([tx, ty, tx + tw - 1, ty + th - 1], fill=colour)
        draw.text((tx + 2, ty + 1), text, fill=_ink(colour), font=f)
    return img


def _ink(colour) -> tuple[int, int, int]:
    """Black or white text, whichever reads on ``colour`` (its luma)."""
    r, g, b = colour
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def present(p: Prediction) -> list[tuple[int, int]]:
    """The classes drawn as (dataset category id, number of boxes), most boxes first."""
    counts: dict[int, int] = {}
    for d in kept(p):
        counts[d["category_id"]] = counts.get(d["category_id"], 0) + 1
    return sorted(counts.items(), key=lambda t: (-t[1], t[0]))


def box_overlay(p: Prediction, categories, *, legend: bool = True) -> Image.Image:
    """The image (enlarged as the segmentation overlay is) with its kept boxes; with
    ``legend`` a strip below: the exit and GFLOPs (:func:`summary_line`), the score threshold,
    and each class drawn with its number of boxes."""
    k = upscale_factor(*p.size)
    img = draw_boxes(enlarge(Image.fromarray(np.ascontiguousarray(p.image)), k).convert("RGB"), p, categories, k)
    if not legend:
        return img
    names = {c.id: c.name for c in categories}
    colour_of = {c.id: c.color for c in categories}
    entries: list = [(None, part) for part in summary_line(p).split(" | ")]
    entries.append((None, f"boxes scoring >= {p.score_threshold:g}:"))
    entries += [(colour_of[cid], f"{names[cid]} x{n}") for cid, n in present(p)] or [(None, "none")]
    return with_legend(img, entries)
