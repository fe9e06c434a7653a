"""Pictures of predictions, drawn with Pillow: the colour overlay with a legend of the classes
present, the compute map (PAUMER Fig. 1: how many encoder layers each token ran before it
paused or its image exited, per token level), and a contact sheet of several images.

Small images are enlarged by a whole factor (nearest neighbour, :mod:`adaseg.predict.drawing`)
so that tokens and text stay legible.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from adaseg.predict.drawing import enlarge, font, summary_line, upscale_factor, with_legend
from adaseg.predict.result import Prediction

# Layers run -> colour: few layers (cheap) light yellow, all layers (expensive) dark purple
# (the viridis end points and stops, sampled by hand: no matplotlib needed).
_RAMP = np.array([[253, 231, 37], [94, 201, 98], [33, 145, 140], [59, 82, 139], [68, 1, 84]], dtype=np.float64)
_PAD_GREY = (60, 60, 60)


def layer_colour(layers_run: int, depth: int) -> tuple[int, int, int]:
    """Colour of a token that ran ``layers_run`` of ``depth`` encoder layers."""
    t = 0.0 if depth <= 1 else (layers_run - 1) / (depth - 1)
    x = t * (len(_RAMP) - 1)
    i = min(int(x), len(_RAMP) - 2)
    c = _RAMP[i] + (x - i) * (_RAMP[i + 1] - _RAMP[i])
    return tuple(int(round(v)) for v in c)  # type: ignore[return-value]


def _shade(colour, seg_id: int) -> np.ndarray:
    # things of one class: each instance a slightly different shade, so neighbours separate
    f = 0.75 + 0.5 * (((seg_id * 2654435761) >> 8) % 100) / 100.0
    return np.clip(np.asarray(colour, dtype=np.float64) * f, 0, 255)


def _boundaries(ids: np.ndarray) -> np.ndarray:
    edge = np.zeros(ids.shape, dtype=bool)
    edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edge[1:, :] |= ids[1:, :] != ids[:-1, :]
    return edge


def label_colours(p: Prediction, categories) -> tuple[np.ndarray, np.ndarray, list[tuple[int, float]]]:
    """-> colour image (H0, W0, 3) float, labelled mask (H0, W0) bool, and the classes present
    as (dataset category id, fraction of the image), largest first."""
    colour_of = {c.id: c.color for c in categories}
    h, w = p.size
    out = np.zeros((h, w, 3), dtype=np.float64)
    if p.panoptic is not None:
        ids = p.panoptic
        labelled = ids > 0
        area: dict[int, int] = {}
        for s in p.segments:
            m = ids == s["id"]
            colour = _shade(colour_of[s["category_id"]], s["id"]) if s["isthing"] else colour_of[s["category_id"]]
            out[m] = colour
            area[s["category_id"]] = area.get(s["category_id"], 0) + int(m.sum())
    elif p.instances is not None:
        labelled = np.zeros((h, w), dtype=bool)
        area = {}
        for k, inst in enumerate(sorted(p.instances, key=lambda r: r["score"])):  # best drawn last
            if inst["score"] < 0.5:
                continue
            m = inst["mask"]
            out[m] = _shade(colour_of[inst["category_id"]], k + 1)
            labelled |= m
        for inst in p.instances:
            if inst["score"] >= 0.5:
                area[inst["category_id"]] = area.get(inst["category_id"], 0) + int(inst["mask"].sum())
    else:
        sem = p.semantic
        labelled = np.zeros((h, w), dtype=bool)
        area = {}
        for k in np.unique(sem).tolist():
            if not 0 <= k < len(categories):
                continue
            cid = categories[k].id
            m = sem == k
            out[m] = colour_of[cid]
            labelled |= m
            area[cid] = int(m.sum())
    present = sorted(((cid, a / float(h * w)) for cid, a in area.items() if a > 0), key=lambda t: -t[1])
    return out, labelled, present


def overlay(p: Prediction, categories, *, legend: bool = True) -> Image.Image:
    """The image with its predicted segments tinted in their class colours (things of one class
    in shades of it), pixels of no segment in dark grey, segment boundaries in white, and
    (``legend``) a strip below naming each class present with its share of the image.
    A detection model's prediction is drawn as boxes instead (:func:`adaseg.predict.boxes.box_overlay`)."""
    if p.detections is not None:
        from adaseg.predict.boxes import box_overlay

        return box_overlay(p, categories, legend=legend)
    rgb = p.image.astype(np.float64)
    colours, labelled, present = label_colours(p, categories)
    # pixels no segment claims (void): the image in dark grey with diagonal hatching, so they
    # read as "not predicted" even next to a grey class such as road
    grey = rgb.mean(axis=2, keepdims=True) * 0.5
    yy, xx = np.indices(labelled.shape)
    grey = np.where((((yy + xx) % 6) < 1)[..., None], 200.0, grey)
    blend = np.where(labelled[..., None], 0.45 * rgb + 0.55 * colours, grey)
    ids = p.panoptic if p.panoptic is not None else p.semantic
    blend[_boundaries(ids)] = 255.0
    k = upscale_factor(*p.size)
    img = enlarge(Image.fromarray(np.clip(blend, 0, 255).astype(np.uint8)), k)
    if not legend:
        return img
    names = {c.id: c.name for c in categories}
    colour_of = {c.id: c.color for c in categories}
    entries = [(colour_of[cid], f"{names[cid]} {100 * frac:.0f}%") for cid, frac in present]
    void = 1.0 - float(labelled.mean())
    if void > 0:
        entries.append(((64, 64, 64), f"void, hatched (no segment) {100 * void:.0f}%"))
    return with_legend(img, entries)


def layers_run_grids(p: Prediction) -> list[np.ndarray]:
    """Per token level, (rows, cols) of the tokens covering the image: how many encoder layers
    each ran (its pause layer, or the image's exit when it never paused)."""
    grids = []
    for level, grid in enumerate(p.pause_grids()):
        r, c = p.valid_cells(level)
        g = grid[:r, :c]
        grids.append(np.where(g > 0, g, p.exit))
    return grids


def compute_panel(p: Prediction, level: int, *, scale: int | None = None) -> Image.Image:
    """One token level over the image: each token tinted by the layers it ran
    (:func:`layer_colour`), grid lines between tokens where cells are big enough."""
    grid = layers_run_grids(p)[level]
    k = scale or upscale_factor(*p.size)
    h0, w0 = p.size
    H, W = h0 * k, w0 * k
    base = Image.fromarray(p.image).convert("L").convert("RGB")
    base = np.asarray(enlarge(base, k), dtype=np.float64)
    # token (i, j) covers valid-image rows [i*sh, (i+1)*sh) at the transformed size; map to output
    th, tw = p.token_shapes[level]
    cell_h = p.input_size[0] / th * (H / p.valid_size[0])
    cell_w = p.input_size[1] / tw * (W / p.valid_size[1])
    rows = np.minimum((np.arange(H) / cell_h).astype(np.int64), grid.shape[0] - 1)
    cols = np.minimum((np.arange(W) / cell_w).astype(np.int64), grid.shape[1] - 1)
    lut = np.array([layer_colour(max(1, v), p.depth) for v in range(p.depth + 1)], dtype=np.float64)
    tint = lut[grid[rows[:, None], cols[None, :]]]
    out = 0.35 * base + 0.65 * tint
    if p.early_exit:
        # early exit: tokens labelled by their auxiliary decoder (the paused ones) are hatched
        paused = (p.pause_grids()[level][: grid.shape[0], : grid.shape[1]] > 0)[rows[:, None], cols[None, :]]
        out[paused & aux_hatch(H, W)] = 0
    if cell_h >= 6 and cell_w >= 6:
        out[(np.floor(np.arange(H) / cell_h) != np.floor((np.arange(H) + 1) / cell_h)), :] = 255
        out[:, (np.floor(np.arange(W) / cell_w) != np.floor((np.arange(W) + 1) / cell_w))] = 255
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def aux_hatch(h: int, w: int, period: int = 6) -> np.ndarray:
    """(h, w) bool diagonal lines, one pixel wide every ``period``: the mark of tokens labelled
    by an auxiliary decoder."""
    return (np.arange(h)[:, None] + np.arange(w)[None, :]) % period == 0


def levels_fine_first(p: Prediction) -> list[int]:
    """Token levels ordered from the most tokens (finest) to the fewest."""
    return sorted(range(len(p.token_shapes)), key=lambda l: -p.token_shapes[l][0] * p.token_shapes[l][1])


def level_name(p: Prediction, level: int) -> str:
    th, tw = p.token_shapes[level]
    stride = round(p.input_size[0] / th)
    r, c = p.valid_cells(level)
    return f"1/{stride} tokens ({r}x{c})"


def pause_line(p: Prediction) -> str:
    rows = p.paused_in_image()
    if not rows:
        return "no tokens paused"
    line = ", ".join(f"{100 * r['paused_image'] / max(1, r['tokens_image']):.0f}% paused after layer {r['layer']}"
                     for r in rows)
    if p.early_exit:
        line += " (early exit: hatched tokens labelled by the auxiliary decoder of their pause layer)"
    return line


def compute_picture(p: Prediction) -> Image.Image:
    """Where the compute went: a header with the exit and GFLOPs and the share of tokens paused
    per stage, one panel per token level, and a colour key of layers run."""
    k = upscale_factor(*p.size)
    order = levels_fine_first(p)
    panels = [compute_panel(p, level, scale=k) for level in order]
    size = max(12, panels[0].width // 22)
    f = font(size)
    pad = size // 2
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = [f"{p.name}: {summary_line(p)}", pause_line(p)]
    width = max([sum(x.width for x in panels) + pad * (len(panels) + 1), _layer_key_width(probe, f, size, pad, p.depth)]
                + [int(probe.textlength(t, font=f)) + 2 * pad for t in lines])
    header = 2 * (size + pad) + pad
    caption = size + pad
    key_h = size + 2 * pad
    out = Image.new("RGB", (width, header + panels[0].height + caption + key_h), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    draw.text((pad, pad), lines[0], fill=(0, 0, 0), font=f)
    draw.text((pad, pad + size + pad), lines[1], fill=(0, 0, 0), font=f)
    x = pad
    for level, panel in zip(order, panels):
        out.paste(panel, (x, header))
        draw.text((x, header + panel.height + pad // 2), level_name(p, level), fill=(0, 0, 0), font=f)
        x += panel.width + pad
    _layer_key(draw, f, x=pad, y=header + panels[0].height + caption + pad // 2, size=size, pad=pad, depth=p.depth)
    return out


def _layer_key_width(draw: ImageDraw.ImageDraw, f, size: int, pad: int, depth: int) -> int:
    return (2 * pad + int(draw.textlength("encoder layers each token ran: ", font=f))
            + sum(size + 6 + int(draw.textlength(str(v), font=f)) + pad for v in range(1, depth + 1)))


def _layer_key(draw: ImageDraw.ImageDraw, f, *, x: int, y: int, size: int, pad: int, depth: int) -> None:
    label = "encoder layers each token ran: "
    draw.text((x, y), label, fill=(0, 0, 0), font=f)
    x += int(draw.textlength(label, font=f))
    for v in range(1, depth + 1):
        draw.rectangle([x, y, x + size, y + size], fill=layer_colour(v, depth), outline=(0, 0, 0))
        draw.text((x + size + 3, y), str(v), fill=(0, 0, 0), font=f)
        x += size + 6 + int(draw.textlength(str(v), font=f)) + pad


def contact_sheet(preds: list[Prediction], categories, *, title: str, row_height: int = 192) -> Image.Image:
    """Up to ``len(preds)`` rows: image | overlay | compute map (finest token level) | exit,
    GFLOPs, paused share and the largest classes."""
    names = {c.id: c.name for c in categories}
    size = max(11, row_height // 12)
    f = font(size)
    pad = size // 2
    cells = []
    for p in preds:
        h0, w0 = p.size
        w = max(1, round(w0 * row_height / h0))
        image = Image.fromarray(p.image).resize((w, row_height), Image.NEAREST if h0 < row_height else Image.BILINEAR)
        over = overlay(p, categories, legend=False).resize((w, row_height), Image.NEAREST)
        comp = compute_panel(p, levels_fine_first(p)[0]).resize((w, row_height), Image.NEAREST)
        text = [p.name, summary_line(p).replace(" | ", "\n"), pause_line(p), _classes_line(p, categories, names)]
        cells.append(([image, over, comp], "\n".join(text)))
    text_w = 26 * size
    width = max((sum(x.width for x in ims) + pad * 4 + text_w for ims, _ in cells), default=400)
    head = ["image", "prediction", "layers run (finest tokens)", ""]
    top = 3 * (size + pad) + pad
    out = Image.new("RGB", (width, top + len(cells) * (row_height + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    draw.text((pad, pad), title, fill=(0, 0, 0), font=f)
    if preds:
        _layer_key(draw, f, x=pad, y=2 * pad + size, size=size, pad=pad, depth=preds[0].depth)
    for r, (ims, text) in enumerate(cells):
        y = top + r * (row_height + pad)
        x = pad
        for c, im in enumerate(ims):
            if r == 0:
                draw.text((x, top - size - pad // 2), head[c], fill=(0, 0, 0), font=f)
            out.paste(im, (x, y))
            x += im.width + pad
        draw.multiline_text((x, y), _wrap(text, f, text_w, draw), fill=(0, 0, 0), font=f, spacing=2)
    return out


def _classes_line(p: Prediction, categories, names: dict) -> str:
    """The largest classes (share of the image), or for boxes the classes with most boxes drawn."""
    if p.detections is not None:
        from adaseg.predict.boxes import present as boxes_present

        return ", ".join(f"{names[c]} x{n}" for c, n in boxes_present(p)[:4]) or "no box above the threshold"
    _, _, present = label_colours(p, categories)
    return ", ".join(f"{names[c]} {100 * a:.0f}%" for c, a in present[:4]) or "nothing predicted"


def _wrap(text: str, f, width: int, draw: ImageDraw.ImageDraw) -> str:
    lines = []
    for para in text.split("\n"):
        line = ""
        for word in para.split(" "):
            trial = word if not line else line + " " + word
            if draw.textlength(trial, font=f) <= width or not line:
                line = trial
            else:
                lines.append(line)
                line = word
        lines.append(line)
    return "\n".join(lines)
