"""Perceptual hashes (pHash, dHash) over batches, and the byte checksum.

The hashes follow imagehash's definitions exactly, so a thresher hash equals
`imagehash.phash(img)` / `imagehash.dhash(img)` bit for bit on the same pixels:
- pHash: grey 32x32 Lanczos thumbnail, 2-D DCT-II (scipy.fftpack, the same routine imagehash
  calls), the top-left 8x8 block compared with its median.
- dHash: grey 9x8 Lanczos thumbnail, each pixel compared with its right neighbour.
The per-image part is only the two thumbnails (Pillow, in C); the DCT, medians and bit packing
run once per batch. Bits are packed row-major, first bit most significant, like imagehash's hex.
"""

from __future__ import annotations

import hashlib

import numpy as np
import scipy.fftpack
from PIL import Image

PHASH_SIDE = 32
DHASH_SIZE = (9, 8)
# Hashes (and the small statistics) are taken from the view box-reduced to a short side of at
# least this: a Lanczos filter from a 1000 px view down to 32 px reads ~75 source pixels per
# output pixel; from 128 px, ~12, for the same 32 px picture. (bench/scan.py measures the stage.)
HASH_VIEW_PX = 128


def hash_view(view: Image.Image) -> Image.Image:
    """The view box-reduced by an integer factor, keeping a short side >= HASH_VIEW_PX."""
    factor = min(view.size) // HASH_VIEW_PX
    return view.reduce(factor) if factor >= 2 else view


def checksum(data: bytes) -> str:
    """SHA-256 of the bytes, hex: what `sha256sum` prints (and fast where the CPU has SHA-NI)."""
    return hashlib.sha256(data).hexdigest()


def pixel_checksum(small: Image.Image, width: int, height: int) -> str:
    """SHA-256 of the decoded pixels, as seen through the hash view, and the image's size.

    Two files with the same pixels (a re-save as PNG, a copy with its EXIF stripped) share it
    although their bytes differ. It reads the box-reduced hash view, not the full decode (a
    hundredth of the bytes): images whose pixels differ only below that averaging, by a few
    levels in a few pixels, share it too, and are, for a dataset, the same picture.
    """
    h = hashlib.sha256(f"{width}x{height}:{small.mode}:{small.size}".encode())
    h.update(small.tobytes())
    return h.hexdigest()


def hash_thumbnails(grey: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The two thumbnails of a grey ("L") view the hashes use: (32, 32) and (8, 9) uint8.

    imagehash converts to "L" and resizes; the scan converts once and shares the grey view.
    """
    t32 = np.asarray(grey.resize((PHASH_SIDE, PHASH_SIDE), Image.Resampling.LANCZOS))
    t98 = np.asarray(grey.resize(DHASH_SIZE, Image.Resampling.LANCZOS))
    return t32, t98


def phash(thumbs32: np.ndarray) -> np.ndarray:
    """pHash of a batch of (N, 32, 32) uint8 grey thumbnails, as (N,) uint64."""
    x = np.asarray(thumbs32)
    dct = scipy.fftpack.dct(scipy.fftpack.dct(x, axis=1), axis=2)
    low = dct[:, :8, :8].reshape(len(x), 64)
    bits = low > np.median(low, axis=1, keepdims=True)
    return pack_bits(bits)


def dhash(thumbs98: np.ndarray) -> np.ndarray:
    """dHash of a batch of (N, 8, 9) uint8 grey thumbnails, as (N,) uint64."""
    x = np.asarray(thumbs98)
    bits = (x[:, :, 1:] > x[:, :, :-1]).reshape(len(x), 64)
    return pack_bits(bits)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(N, 64) booleans -> (N,) uint64, first bit most significant."""
    return np.packbits(bits, axis=1).view(">u8").astype(np.uint64).reshape(-1)


def to_hex(h: np.uint64 | int) -> str:
    """The 16-digit hex form imagehash prints (`str(imagehash.phash(img))`)."""
    return f"{int(np.uint64(h)):016x}"
