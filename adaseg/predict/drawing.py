"""Drawing helpers shared by the pictures of predictions (:mod:`adaseg.predict.pictures` for
segments and compute maps, :mod:`adaseg.predict.boxes` for boxes): the font, the enlargement
of small images, the legend strip and the one-line summary of an image's exit and GFLOPs.

Images whose shorter side is under :data:`MIN_SIDE` pixels are enlarged by a whole factor
(nearest neighbour) so that tokens and text stay legible; larger ones keep their size.
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

from adaseg.predict.result import Prediction

MIN_SIDE = 256


def font(size: int):
    """Pillow's built-in font at ``size`` px (FreeType's scalable one when Pillow has it)."""
    from PIL import features

    if features.check("freetype2"):
        return ImageFont.load_default(size=max(8, int(size)))
    return ImageFont.load_default()


def upscale_factor(h: int, w: int) -> int:
    return max(1, math.ceil(MIN_SIDE / max(1, min(h, w))))


def enlarge(img: Image.Image, k: int) -> Image.Image:
    return img if k == 1 else img.resize((img.width * k, img.height * k), Image.NEAREST)


def with_legend(img: Image.Image, entries: list[tuple[tuple[int, int, int] | None, str]]) -> Image.Image:
    """``img`` above a strip of entries ``(colour, text)``, wrapped into rows; an entry whose
    colour is None is text without a swatch."""
    size = max(12, img.width // 28)
    f = font(size)
    pad, sw = size // 2, size
    draw0 = ImageDraw.Draw(img)
    rows, x, row = [[]], pad, 0
    for colour, text in entries:
        tw = int(draw0.textlength(text, font=f))
        need = (0 if colour is None else sw + pad // 2) + tw + pad
        if x + need > img.width and rows[row]:
            rows.append([])
            row += 1
            x = pad
        rows[row].append((x, colour, text))
        x += need
    line = size + pad
    out = Image.new("RGB", (img.width, img.height + len(rows) * line + pad), (255, 255, 255))
    out.paste(img, (0, 0))
    draw = ImageDraw.Draw(out)
    for r, items in enumerate(rows):
        y = img.height + pad + r * line
        for x0, colour, text in items:
            if colour is None:
                draw.text((x0, y), text, fill=(0, 0, 0), font=f)
                continue
            draw.rectangle([x0, y, x0 + sw, y + sw], fill=tuple(colour), outline=(0, 0, 0))
            draw.text((x0 + sw + pad // 2, y), text, fill=(0, 0, 0), font=f)
    return out


def summary_line(p: Prediction) -> str:
    """``exit 4 of 6 (gate) | 0.84 GFLOPs (encoder 0.31)``."""
    how = {"gate": "gate", "fixed": "fixed", "full": "full depth"}[p.exit_source]
    text = f"exit {p.exit} of {p.depth} ({how})"
    if p.gflops is not None:
        text += f" | {p.gflops['total']:.3f} GFLOPs (encoder {p.gflops['encoder']:.3f})"
    return text
