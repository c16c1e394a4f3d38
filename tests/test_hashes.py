"""pHash and dHash must equal imagehash's bit for bit on the same pixels."""

from __future__ import annotations

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageDraw

from thresher.bits import hamming
from thresher.demo import draw_object
from thresher.scan import hashes


def _images():
    rng = np.random.default_rng(7)
    ims = []
    for label in ("circle", "square", "triangle", "star", "cross"):
        for w, h in ((640, 480), (300, 900), (1024, 1024)):
            ims.append(draw_object(label, w, h, rng))
    ims.append(Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)))
    ims.append(Image.new("RGB", (500, 500), (30, 90, 200)))  # blank: DCT all but DC ~ 0
    ims.append(Image.new("RGB", (64, 64), (255, 255, 255)))
    grad = np.tile(np.linspace(0, 255, 400, dtype=np.float32), (300, 1))
    ims.append(Image.fromarray(grad.astype(np.uint8)).convert("RGB"))
    text = Image.new("RGB", (600, 400), "white")
    ImageDraw.Draw(text).text((20, 20), "line art on white " * 3, fill="black")
    ims.append(text)
    ims.append(Image.fromarray(rng.integers(0, 256, (7, 13, 3), dtype=np.uint8)))  # tiny
    return ims


def test_phash_and_dhash_equal_imagehash_bit_for_bit():
    ims = _images()
    t32, t98 = zip(*(hashes.hash_thumbnails(im.convert("L")) for im in ims), strict=True)
    ph = hashes.phash(np.stack(t32))
    dh = hashes.dhash(np.stack(t98))
    assert ph.dtype == np.uint64 and ph.shape == (len(ims),)
    for im, p, d in zip(ims, ph, dh, strict=True):
        assert hashes.to_hex(p) == str(imagehash.phash(im))
        assert hashes.to_hex(d) == str(imagehash.dhash(im))
    assert len(set(ph.tolist())) > len(ims) // 2  # hashes actually differ between images


def test_batched_phash_equals_one_at_a_time():
    ims = _images()
    t32 = np.stack([hashes.hash_thumbnails(im.convert("L"))[0] for im in ims])
    whole = hashes.phash(t32)
    singles = np.concatenate([hashes.phash(t32[i : i + 1]) for i in range(len(t32))])
    np.testing.assert_array_equal(whole, singles)


@pytest.mark.parametrize(
    "a, b, expected",
    [(0, 0, 0), (0, 0xFFFFFFFFFFFFFFFF, 64), (0b1011, 0b0001, 2), (1 << 63, 0, 1)],
)
def test_hamming(a, b, expected):
    assert hamming(np.uint64(a), np.uint64(b)) == expected


def test_checksum_distinguishes_bytes():
    assert hashes.checksum(b"abc") == hashes.checksum(b"abc")
    assert hashes.checksum(b"abc") != hashes.checksum(b"abd")
    assert (
        hashes.checksum(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
