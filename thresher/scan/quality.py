"""Image statistics for the quality rules: blank / low-information, blur and effective resolution.

`pixel_stats` works on a batch of small RGB thumbnails at once (numpy, no per-pixel Python).
`effective_resolution` looks at one decoded view: it tells an image upscaled from 200x300 to
4K apart from a real 4K photo.

How the effective resolution is estimated: the structure function D(d), the mean squared
difference between pixels d apart, grows like d^2 where the image is smooth at that scale
(interpolated from fewer pixels) and much slower where it carries real detail (natural images:
about d^1). So the log-slope of D between d and 2d stays near 2 up to the upscaling factor and
falls below it after. The scale where it crosses `SMOOTH_SLOPE` is the upscaling factor; the
view's short side divided by it is the effective short side. The estimate is made on the
decoded view, so it can reveal upscaling down to the view size (`view_px`); an image that is
sharp at its view is reported at its native size.

Upscaling softens every region, defocus only some: the factor is taken as the smallest over
the textured tiles of the whole view, so a photo with one sharp subject on a blurred background
is not an upscale. A nearest-neighbour blow-up (hard block edges read as sharp) is found by the
period of its block grid.

When it is wrong (bench/clean_real.py): a photo that is soft everywhere (fog, a macro shot
whose subject is also out of focus) reads as upscaled, and an upscale of a smooth picture
(gradients, soft abstract art) is identical to it and cannot be found; a x8 nearest blow-up
hides behind JPEG's 8x8 grid.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

THUMB_SIDE = 32  # side of the square RGB thumbnail the pixel statistics are taken from
DETAIL_TILE = 64  # the resolution estimate looks at a DETAIL_GRID x DETAIL_GRID grid of tiles
DETAIL_GRID = 3
# log2 D(2d)/D(d) above this: smooth at scale d (2.0 = linear). Set on the demo's planted
# fakes (found 17 of 17, no false alarm, bench/clean_quality.py) and a handful of real photos
# checked by hand, which read between 1.0 and 1.3.
SMOOTH_SLOPE = 1.5
_SPACINGS = np.array([1, 2, 4, 8, 16])
# A tile whose 1-px squared differences (both directions, 0-255 grey) average above this carries
# detail worth reading; JPEG noise on a flat tile stays below ~5 (bench/clean_real.py photos).
TEXTURED_D1 = 20.0
# Autocorrelation of the column-difference profile above this: a nearest-neighbour block grid.
# Genuine photos, drawings and JPEG copies on the real bench reach 0.54; nearest fakes 0.73-0.97.
BLOCK_MIN_STRENGTH = 0.65
_BLOCK_LAGS = (2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15)


def stats_thumbnail(view: Image.Image) -> np.ndarray:
    """(32, 32, 3) uint8 box-filtered thumbnail of a (small) view; aspect ratio not kept."""
    return np.asarray(view.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX))


def pixel_stats(thumbs: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image statistics of a (N, H, W, 3) uint8 batch.

    Returns mean_r/g/b and std_r/g/b (0-255), entropy (bits of the grey-level histogram, 0..8) and
    dominant_share (share of pixels in the most common 12-bit colour, 0..1).
    """
    x = np.asarray(thumbs)
    n = len(x)
    flat = x.reshape(n, -1, 3)
    as_float = flat.astype(np.float32)
    mean = as_float.mean(axis=1)
    std = as_float.std(axis=1)
    # ITU-R 601 luma with Pillow's integer weights, so it matches convert("L").
    wide = flat.astype(np.int32)
    grey = (wide[..., 0] * 19595 + wide[..., 1] * 38470 + wide[..., 2] * 7471 + 0x8000) >> 16
    hist = _batched_bincount(grey, 256)
    p = hist / hist.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nansum(np.where(p > 0, p * np.log2(p), 0.0), axis=1)
    q = wide >> 4
    colour = (q[..., 0] << 8) | (q[..., 1] << 4) | q[..., 2]
    dominant = _batched_bincount(colour, 4096).max(axis=1) / flat.shape[1]
    return {
        "mean_r": mean[:, 0],
        "mean_g": mean[:, 1],
        "mean_b": mean[:, 2],
        "std_r": std[:, 0],
        "std_g": std[:, 1],
        "std_b": std[:, 2],
        "entropy": entropy.astype(np.float32),
        "dominant_share": dominant.astype(np.float32),
    }


def _batched_bincount(values: np.ndarray, bins: int) -> np.ndarray:
    """Row-wise histogram of a (N, M) int array into `bins` bins, in one bincount call."""
    n = len(values)
    offset = (np.arange(n, dtype=values.dtype) * bins)[:, None]
    return np.bincount((values + offset).ravel(), minlength=n * bins).reshape(n, bins)


def detail_slopes(view: Image.Image | np.ndarray) -> np.ndarray:
    """log2 D(2d)/D(d) for d = 1, 2, 4, 8, measured on a grid of tiles over the view.

    Tiles spread over the whole image, so a large flat object in the centre cannot hide the
    detail (or its absence) around it; flat tiles add almost nothing to D. Only the tiles are
    converted to grey, not the whole view.
    """
    if isinstance(view, Image.Image):  # crop first: converting the whole view costs more
        w, h = view.size
        t = min(DETAIL_TILE, h, w)
        ys = np.linspace(0, h - t, DETAIL_GRID).astype(int)
        xs = np.linspace(0, w - t, DETAIL_GRID).astype(int)
        tiles = np.stack(
            [np.asarray(view.crop((x, y, x + t, y + t))) for y in ys for x in xs]
        ).astype(np.float32)
    else:
        a = np.asarray(view)
        h, w = a.shape[:2]
        t = min(DETAIL_TILE, h, w)
        ys = np.linspace(0, h - t, DETAIL_GRID).astype(int)
        xs = np.linspace(0, w - t, DETAIL_GRID).astype(int)
        tiles = np.stack([a[y : y + t, x : x + t] for y in ys for x in xs]).astype(np.float32)
    if tiles.ndim == 4:  # RGB: ITU-R 601 luma, as Pillow's convert("L")
        tiles = tiles @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    d = np.array(
        [
            np.square(tiles[:, :, s:] - tiles[:, :, :-s]).mean()
            + np.square(tiles[:, s:, :] - tiles[:, :-s, :]).mean()
            if s < t
            else np.nan
            for s in _SPACINGS
        ]
    )
    d = d + 1e-3  # a flat image has D = 0 at every scale: slope 0, i.e. "not smooth"
    return np.log2(d[1:] / d[:-1])


def upscale_factor(slopes: np.ndarray, smooth_slope: float = SMOOTH_SLOPE) -> float:
    """How many times the view was enlarged from its real resolution (1.0 = sharp)."""
    s = np.nan_to_num(np.asarray(slopes, dtype=np.float64), nan=0.0)
    if s[0] < smooth_slope:
        return 1.0
    below = np.nonzero(s < smooth_slope)[0]
    if len(below) == 0:
        return float(2.0 ** (len(s) - 0.5))
    k = below[0]
    # The slope between d and 2d describes scale log2(d) + 0.5; interpolate the crossing.
    x = (k - 1 + 0.5) + (s[k - 1] - smooth_slope) / (s[k - 1] - s[k])
    return float(2.0**x)


def _grey(view: Image.Image | np.ndarray) -> np.ndarray:
    """float32 luma of a view (ITU-R 601, as Pillow's convert("L"))."""
    if isinstance(view, Image.Image):
        return np.asarray(view.convert("L"), dtype=np.float32)
    a = np.asarray(view, dtype=np.float32)
    return a @ np.array([0.299, 0.587, 0.114], dtype=np.float32) if a.ndim == 3 else a


def tile_factors(grey: np.ndarray, tile: int = DETAIL_TILE) -> np.ndarray:
    """The upscale factor of every textured tile of a grey view (tiles covering it all).

    A tile is textured when its 1-pixel differences carry real contrast (TEXTURED_D1): flat sky
    or a defocused background says nothing about the resolution, and JPEG noise on a flat tile
    would read as sharp. Empty when no tile is textured.
    """
    h, w = grey.shape
    ny, nx = h // tile, w // tile
    if ny == 0 or nx == 0:
        return np.zeros(0)
    t = grey[: ny * tile, : nx * tile].reshape(ny, tile, nx, tile).transpose(0, 2, 1, 3)
    t = t.reshape(ny * nx, tile, tile)
    d = np.stack(
        [
            np.square(t[:, :, s:] - t[:, :, :-s]).mean(axis=(1, 2))
            + np.square(t[:, s:, :] - t[:, :-s, :]).mean(axis=(1, 2))
            for s in _SPACINGS
        ],
        axis=1,
    )
    textured = d[:, 0] > TEXTURED_D1
    slopes = np.log2((d[textured, 1:] + 1e-3) / (d[textured, :-1] + 1e-3))
    return np.array([upscale_factor(s) for s in slopes])


def block_period(grey: np.ndarray) -> tuple[float, int]:
    """(strength 0-1, period in px) of a nearest-neighbour blow-up's block grid.

    Nearest-neighbour upscaling repeats each pixel f times, so the mean absolute difference
    between neighbouring columns (and rows) peaks every f columns. The profile, high-passed,
    is autocorrelated; the strongest lag in 2..15 is the period. Lag 8 is left out: JPEG's own
    8x8 block grid peaks there in every JPEG (a x8 nearest blow-up is missed for it).
    """
    from scipy.ndimage import median_filter

    best, period = 1.0, 0
    for profile in (
        np.abs(np.diff(grey, axis=1)).mean(axis=0),
        np.abs(np.diff(grey, axis=0)).mean(axis=1),
    ):
        if len(profile) < 64:
            return 0.0, 0
        e = profile - median_filter(profile, 17, mode="nearest")
        n = len(e)
        f = np.fft.rfft(e, 2 * n)
        r = np.fft.irfft(f * np.conj(f))[:n]
        if r[0] <= 1e-9:
            return 0.0, 0
        r = r / r[0]
        lag = max(_BLOCK_LAGS, key=lambda k: r[k])
        if r[lag] < best:
            best, period = float(r[lag]), lag
    return max(best, 0.0), period


def effective_short_side(view: Image.Image | np.ndarray, native_short: int) -> tuple[float, int]:
    """(blur slope at 1 px, effective short side in pixels) for one view (RGB or grey).

    Upscaling softens every region of a picture; defocus only some. So the factor is the
    smallest over the textured tiles (one sharp subject makes a photo sharp), capped by the
    pooled estimate; a nearest-neighbour blow-up, whose hard block edges read as sharp, is
    found by its block grid instead (block_period).
    """
    slopes = detail_slopes(view)
    grey = _grey(view)
    factor = upscale_factor(slopes)
    tiles = tile_factors(grey)
    if len(tiles):
        factor = min(factor, float(tiles.min()))
    if factor <= 1.0:  # sharp to the smooth-blow-up reading: a nearest blow-up reads so too
        strength, period = block_period(grey)
        if strength >= BLOCK_MIN_STRENGTH:
            factor = float(period)
    if factor <= 1.0:
        return float(slopes[0]), int(native_short)
    view_short = min(grey.shape[:2])
    return float(slopes[0]), int(min(native_short, round(view_short / factor)))
