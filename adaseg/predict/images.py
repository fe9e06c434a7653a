"""The user's images: finding them on disk and reading them as 8-bit RGB.

Any file Pillow can decode is accepted, whatever its size, aspect or pixel format. What is
converted is said in one note per image (so a user knows the model saw something other than
the file's own pixels): grayscale and palette images become RGB, an alpha channel is dropped
(not composited), 16-bit and 32-bit samples are scaled to 8 bits. EXIF orientation is applied
first (``ImageOps.exif_transpose``): a phone photo is predicted the way it is displayed, and the
outputs have its displayed size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Extensions a folder is searched for (files named on the command line may have any).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


class ImageError(ValueError):
    """An image that cannot be predicted; ``str()`` is one line naming the file."""


@dataclass(frozen=True)
class ImageInput:
    """One image to predict: ``path`` on disk and ``name``, unique within one call (the stem
    of its output files: its path under the folder it was found in, ``/`` -> ``__``)."""

    path: Path
    name: str


@dataclass
class LoadedImage:
    """``rgb`` (H, W, 3) uint8 as displayed (EXIF orientation applied); ``note``: what was
    converted, or None."""

    name: str
    rgb: np.ndarray
    note: str | None = None
    source: str = ""


def find_images(inputs: list[str | os.PathLike], *, exclude: list[str | os.PathLike] = (),
                dropped: list[Path] | None = None) -> list[ImageInput]:
    """Files as given, folders searched recursively for :data:`IMAGE_EXTENSIONS` (sorted);
    a missing path is an :class:`ImageError`. Names are made unique (``name-2``, ...).

    Never inputs: files under a folder of ``exclude`` (``--out``: an output folder inside an
    INPUT folder does not feed its own pictures back in), hidden files and folders (a
    ``.tmp-*`` folder being written), and folders holding an ``adaseg predict`` output
    (earlier outputs, wherever they were written). Files left out that way are appended to
    ``dropped`` when given."""
    from adaseg.predict.writer import is_prediction_output

    fences = [Path(e).resolve() for e in exclude]

    def fenced(f: Path) -> bool:
        real = f.resolve()
        return any(real == d or d in real.parents for d in fences)

    found: list[tuple[Path, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = []
            seen: set[Path] = set()  # linked folders are followed, each real folder once (no loops)
            for root, dirs, names in os.walk(p, followlinks=True):
                here = Path(root)
                if here.resolve() in seen:
                    dirs[:] = []
                    continue
                seen.add(here.resolve())
                if here != p and (fenced(here) or is_prediction_output(here)):
                    if dropped is not None:
                        dropped.extend(sorted(f for f in here.rglob("*") if f.is_file()))
                    dirs[:] = []
                    continue
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files.extend(here / n for n in names if not n.startswith(".")
                             and Path(n).suffix.lower() in IMAGE_EXTENSIONS and (here / n).is_file())
            for f in sorted(files):
                if fenced(f):
                    if dropped is not None:
                        dropped.append(f)
                    continue
                found.append((f, "__".join(f.relative_to(p).with_suffix("").parts)))
        elif p.exists():
            if fenced(p):
                if dropped is not None:
                    dropped.append(p)
                continue
            found.append((p, p.stem))
        else:
            raise ImageError(f"{p}: no such file or folder")
    return [ImageInput(path, name) for path, name in zip((f for f, _ in found), unique_names([n for _, n in found]))]


def unique_names(names: list[str]) -> list[str]:
    """``names`` with repeats suffixed ``-2``, ``-3``, ... (first one kept)."""
    seen: set[str] = set()
    out = []
    for name in names:
        candidate, k = name, 1
        while candidate in seen:
            k += 1
            candidate = f"{name}-{k}"
        seen.add(candidate)
        out.append(candidate)
    return out


def read_image(path: str | os.PathLike, *, name: str | None = None) -> LoadedImage:
    """Decode ``path`` completely (a truncated file fails here, not half-way through a batch)
    and convert it to displayed 8-bit RGB; :class:`ImageError` naming the file otherwise."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            im.load()
            rgb, note = to_rgb(im)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise ImageError(f"{path}: unreadable image ({exc})") from None
    return LoadedImage(name=name or path.stem, rgb=rgb, note=note, source=str(path))


def to_rgb(im) -> tuple[np.ndarray, str | None]:
    """A PIL image -> ((H, W, 3) uint8 RGB as displayed, note or None); see the module docstring."""
    from PIL import ImageOps

    notes = []
    orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
    if orientation not in (None, 1):
        im = ImageOps.exif_transpose(im)
        notes.append(f"EXIF orientation {orientation} applied")
    mode = im.mode
    if im.width == 0 or im.height == 0:
        raise ImageError(f"image of size {im.width}x{im.height}")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit samples (I;16*, and 16-bit PNGs Pillow opens as "I"): full range 0..65535 -> 0..255
        a = np.asarray(im, dtype=np.float64)
        gray = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        notes.append(f"{'16' if mode.startswith('I;16') else '32'}-bit grayscale ({mode}) scaled to 8-bit RGB")
        return np.repeat(gray[..., None], 3, axis=2), "; ".join(notes)
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        gray = np.zeros(a.shape, np.uint8) if hi <= lo else np.rint((a - lo) / (hi - lo) * 255).astype(np.uint8)
        notes.append(f"32-bit float grayscale (F) scaled from [{lo:g}, {hi:g}] to 8-bit RGB")
        return np.repeat(gray[..., None], 3, axis=2), "; ".join(notes)
    if mode != "RGB":
        what = {"L": "grayscale (L)", "1": "1-bit (1)", "LA": "grayscale with alpha (LA): alpha dropped,",
                "RGBA": "RGBA: alpha dropped,", "P": "palette (P)", "PA": "palette with alpha (PA): alpha dropped,",
                "CMYK": "CMYK", "YCbCr": "YCbCr", "LAB": "LAB", "HSV": "HSV"}.get(mode, mode)
        notes.append(f"{what} converted to RGB")
        im = im.convert("RGBA").convert("RGB") if mode in ("P", "PA") else im.convert("RGB")
    return np.array(im, dtype=np.uint8), "; ".join(notes) or None
