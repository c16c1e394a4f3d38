"""Decoding: every colour mode to the RGB a person sees, bad input to a recorded reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from thresher.images import DecodeIssue, decode

LIMIT = 89_478_485


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def _pixel(data: bytes, xy=(5, 5)):
    return decode(data, 64, LIMIT).view.getpixel(xy)


def test_transparent_pixels_are_composited_on_white():
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    assert _pixel(_encode(rgba, "PNG")) == (255, 255, 255)
    half = Image.new("RGBA", (32, 32), (0, 0, 0, 128))
    assert _pixel(_encode(half, "PNG")) == pytest.approx((127, 127, 127), abs=1)
    la = Image.new("LA", (32, 32), (0, 0))
    assert _pixel(_encode(la, "PNG")) == (255, 255, 255)


def test_palette_with_transparency_is_composited_on_white():
    p = Image.new("P", (32, 32), 0)
    p.putpalette([10, 20, 30] * 256)
    data = _encode(p, "PNG", transparency=0)
    d = decode(data, 64, LIMIT)
    assert d.mode == "P"
    assert d.view.getpixel((1, 1)) == (255, 255, 255)
    assert _pixel(_encode(p, "GIF")) == (10, 20, 30)  # no transparency: the palette colour


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    a = np.full((16, 16), 32768, dtype=np.uint16)
    a[:8] = 65535
    d = decode(_encode(Image.fromarray(a), "PNG"), 64, LIMIT)
    assert d.mode.startswith("I")
    assert d.view.getpixel((0, 0)) == (255, 255, 255)
    assert d.view.getpixel((0, 12))[0] in (127, 128)  # half of full scale, not 255


def test_cmyk_and_greyscale_jpegs_become_rgb():
    white = Image.new("CMYK", (32, 32), (0, 0, 0, 0))
    assert _pixel(_encode(white, "JPEG", quality=95)) == pytest.approx((255, 255, 255), abs=2)
    grey = Image.new("L", (32, 32), 100)
    d = decode(_encode(grey, "JPEG"), 64, LIMIT)
    assert d.mode == "L" and d.view.mode == "RGB"
    assert d.view.getpixel((3, 3)) == pytest.approx((100, 100, 100), abs=2)


def test_exif_orientation_is_applied_to_view_and_size():
    im = Image.new("RGB", (300, 100), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 50, 100))  # red band on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    d = decode(_encode(im, "JPEG", exif=exif, quality=95), 64, LIMIT)
    assert (d.width, d.height) == (100, 300)
    assert d.view.size == (100, 300)
    r, g, b = d.view.getpixel((50, 10))  # the left band is now on top
    assert r > 200 and b < 60


def test_large_jpeg_is_decoded_in_draft_mode_but_keeps_its_real_size():
    big = Image.new("RGB", (4000, 3000), (80, 120, 160))
    d = decode(_encode(big, "JPEG"), 256, LIMIT)
    assert (d.width, d.height) == (4000, 3000)
    assert min(d.view.size) >= 256 and max(d.view.size) <= 1000  # 1/8 scale: 500 x 375


def test_large_png_is_box_reduced_to_the_view():
    d = decode(_encode(Image.new("RGB", (2100, 1400), "red"), "PNG"), 512, LIMIT)
    assert (d.width, d.height) == (2100, 1400)
    assert d.view.size == (1050, 700)


@pytest.mark.parametrize(
    "data, status, words",
    [
        (b"", "empty", "zero-byte"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "not_image", "HTML"),
        (b"\x00\x01garbage" * 50, "not_image", "not an image"),
    ],
)
def test_non_images_are_recorded_with_a_reason(data, status, words):
    with pytest.raises(DecodeIssue) as e:
        decode(data, 64, LIMIT)
    assert e.value.status == status
    assert words in e.value.reason


def test_truncated_jpeg_is_corrupt():
    rng = np.random.default_rng(0)
    data = _encode(Image.fromarray(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(DecodeIssue) as e:
        decode(data[: len(data) // 2], 64, LIMIT)
    assert e.value.status == "corrupt"
    assert e.value.facts["width"] == 400  # the header was still read


def test_decompression_bomb_is_oversized_and_never_decoded(monkeypatch):
    data = _encode(Image.new("1", (12000, 12000)), "PNG")  # 144 MP in a few kB

    def no_decoding(self):
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(DecodeIssue) as e:
        decode(data, 64, LIMIT)
    assert e.value.status == "oversized"
    assert e.value.facts["width"] == 12000 and "144 MP" in e.value.reason
