"""Images: robust decoding (bytes in, an RGB view and the file's facts out, or a recorded
reason), and the one thumbnail-to-JPEG routine that clean's report and the review page show.

Decoding is the scan's cost, so it is done once per file and only as large as the measurements
need: JPEGs use libjpeg's DCT scaling (draft mode, 1/2 to 1/8 at almost no cost), other formats
a box reduction after load. Every colour mode is brought to 8-bit RGB the way a person would
see it: alpha composited on white, 16-bit scaled (not clipped), CMYK converted, EXIF
orientation applied.

A neutral leaf: the scan, the training data, clean's report and the review server all decode
through here, so none of them reaches into another stage for it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from thresher.config import ScanConfig
from thresher.files import FileRefused, read_regular

# thresher applies its own bomb limit from the header, before decoding; Pillow's would raise
# inside Image.open with no way to record the size.
Image.MAX_IMAGE_PIXELS = None

_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transposition that undoes it (as in PIL.ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class DecodeIssue(Exception):
    """The file cannot be measured; `status` is one of the catalog's issue statuses."""

    def __init__(self, status: str, reason: str, **facts):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.facts = facts


@dataclass
class Decoded:
    """A decoded file: `view` is RGB with short side >= view_px (or the native size if smaller)."""

    view: Image.Image
    format: str
    mode: str
    width: int  # native, after EXIF orientation
    height: int


def decode(data: bytes, view_px: int, max_image_pixels: int) -> Decoded:
    """Decode `data` to an RGB view; raise DecodeIssue for empty, non-image, bomb or corrupt."""
    if len(data) == 0:
        raise DecodeIssue("empty", "zero-byte file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        head = data[:64].lstrip().lower()
        what = "an HTML page" if head.startswith((b"<!doctype html", b"<html")) else "not an image"
        raise DecodeIssue("not_image", f"{what} ({_sniff(data)})") from None
    except Exception as e:  # a damaged header can raise anything from struct.error to SyntaxError
        raise DecodeIssue("corrupt", f"unreadable header: {e}") from None

    fmt, mode = im.format or "?", im.mode
    w, h = im.size
    orientation = _orientation(im)
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    if w * h > max_image_pixels:
        raise DecodeIssue(
            "oversized",
            f"{w}x{h} = {w * h / 1e6:.0f} MP exceeds max_image_pixels "
            f"({max_image_pixels / 1e6:.0f} MP); not decoded",
            format=fmt,
            mode=mode,
            width=w,
            height=h,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fmt == "JPEG":
                im.draft(None, (view_px, view_px))
            im.load()
            view = _reduce(to_rgb(im), view_px)
    except Exception as e:
        raise DecodeIssue(
            "corrupt", f"decode failed: {e}", format=fmt, mode=mode, width=w, height=h
        ) from None
    if orientation in _TRANSPOSE:
        view = view.transpose(_TRANSPOSE[orientation])
    return Decoded(view=view, format=fmt, mode=mode, width=w, height=h)


def thumbnail_jpeg(path: Path | str, size: int, quality: int) -> bytes | None:
    """JPEG bytes of the image at `path`, its long side at most `size`; None if unreadable.

    The file is read by the one safe rule (`read_regular`: a FIFO or a device cannot block,
    a huge file is refused unread) and decoded under the scan's pixel limit, so a report or
    a review page can show any catalogued path without trusting it.
    """
    limits = ScanConfig()
    try:
        data = read_regular(path, limits.max_file_bytes)
        view = decode(data, size, limits.max_image_pixels).view
    except (FileRefused, DecodeIssue):
        return None
    view.thumbnail((size, size))
    buf = io.BytesIO()
    view.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB as displayed: alpha on white, 16-bit scaled, CMYK converted."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16"):
            top = 65535.0
        else:  # 32-bit int or float: scale by the image's own range, as a viewer would
            top = max(float(a.max()), 255.0) if mode == "I" else max(float(a.max()), 1.0)
        a = np.clip(a * (255.0 / top), 0, 255)
        return Image.fromarray(np.round(a).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def _reduce(im: Image.Image, view_px: int) -> Image.Image:
    """Shrink by an integer box factor while the short side stays >= view_px."""
    factor = min(im.size) // view_px
    return im.reduce(factor) if factor >= 2 else im


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # a malformed EXIF block must not lose the image
        return 1


def _sniff(data: bytes) -> str:
    # What kind of bytes, never which bytes: a reason is stored and shown, and a manifest row
    # may name a secret (/etc/shadow, a .env file) whose first bytes must not be copied out.
    head = data[:512]
    text = all(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return f"{len(data)} bytes of {'text' if text else 'binary data'} in no known image format"
