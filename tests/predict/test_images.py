"""Reading the user's images: formats converted with one note, EXIF orientation, bad files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from adaseg.predict.images import ImageError, find_images, read_image


def _rgb(h=6, w=10):
    return (np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3) * 7) % 251


def test_rgb_png_unchanged(tmp_path):
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "a.png")
    got = read_image(tmp_path / "a.png")
    assert got.note is None and np.array_equal(got.rgb, a) and got.name == "a"


def test_grayscale_rgba_palette_converted_with_one_note(tmp_path):
    g = _rgb()[..., 0]
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    got = read_image(tmp_path / "g.png")
    assert np.array_equal(got.rgb, np.repeat(g[..., None], 3, axis=2)) and "grayscale" in got.note
    rgba = np.concatenate([_rgb(), np.full((6, 10, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    got = read_image(tmp_path / "t.png")
    assert np.array_equal(got.rgb, rgba[..., :3]) and "alpha dropped" in got.note
    Image.fromarray(_rgb()).convert("P").save(tmp_path / "p.png")
    assert "palette" in read_image(tmp_path / "p.png").note


def test_16bit_grayscale_scaled_to_8bit(tmp_path):
    # full 16-bit range -> 8 bits: v / 257 rounded (0 -> 0, 65535 -> 255, 257*k -> k)
    v = np.array([[0, 257, 514, 65535], [32896, 128, 129, 65278]], dtype=np.uint16)
    Image.fromarray(v).save(tmp_path / "d.png")  # a 16-bit grayscale PNG
    got = read_image(tmp_path / "d.png")
    expected = np.array([[0, 1, 2, 255], [128, 0, 1, 254]], dtype=np.uint8)
    assert np.array_equal(got.rgb[..., 0], expected) and np.array_equal(got.rgb[..., 2], expected)
    assert "16-bit" in got.note or "32-bit" in got.note


def test_exif_orientation_is_applied(tmp_path):
    # orientation 6: the stored pixels must be rotated 90 degrees clockwise to display
    a = np.zeros((4, 8, 3), np.uint8)
    a[0, 0] = (255, 0, 0)  # top-left stored pixel
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "r.png", exif=exif.tobytes())
    got = read_image(tmp_path / "r.png")
    assert got.rgb.shape == (8, 4, 3)  # displayed size: height and width swapped
    assert tuple(got.rgb[0, 3]) == (255, 0, 0)  # stored top-left is displayed top-right
    assert "EXIF orientation 6" in got.note


@pytest.mark.parametrize("content,expect", [
    (b"", "empty file"),
    (b"this is not an image", "not an image"),
    ("truncated", "unreadable image"),
])
def test_bad_files_name_the_file(tmp_path, content, expect):
    path = tmp_path / "bad.png"
    if content == "truncated":
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageError) as exc:
        read_image(path)
    assert str(path) in str(exc.value) and expect in str(exc.value) and "\n" not in str(exc.value)


def test_find_images_recursive_with_unique_names(tmp_path):
    for rel in ("a/x.png", "a/sub/y.JPG", "b/x.png", "a/notes.txt", "a/.hidden/z.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = find_images([tmp_path / "a", tmp_path / "b" / "x.png"])
    assert [f.name for f in found] == ["sub__y", "x", "x-2"]
    assert [f.path.name for f in found] == ["y.JPG", "x.png", "x.png"]
    with pytest.raises(ImageError, match="no such file"):
        find_images([tmp_path / "missing"])
