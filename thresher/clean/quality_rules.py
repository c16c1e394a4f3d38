"""Rules over the scan's measurements: unreadable, low resolution, upscaled fakes, blank images.

Pure functions from catalog columns to the one result shape every issue type shares: a boolean
`is_issue` per row and a `confidence` in 0-1 (higher = more surely an issue), so "the worst 5%"
is a sort. Thresholds come from `config.CleanThresholds`, documented there.

When the rules are wrong (measured on real images, bench/clean_real.py):
- low resolution is exact by definition (the short side as stored), but a small image is not
  always garbage: icons and thumbnails of a small-object class may be all there is;
- upscaled inherits the effective-resolution estimate's limits (scan/quality.py): a photo soft
  everywhere reads as upscaled, an upscale of a smooth picture cannot be told from it;
- blank: a photo of an evenly lit white wall or a clear sky is as uniform as a blank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thresher.config import CleanThresholds

# Scan statuses that are issues in themselves: the file cannot be used at all.
UNUSABLE_STATUSES = ("corrupt", "empty", "not_image", "oversized", "unreadable", "broken_symlink")


def _reasons(hit: np.ndarray, fmt, *columns: np.ndarray) -> np.ndarray:
    """One-line reasons for the flagged rows only ("" elsewhere): no string per clean file."""
    out = np.full(len(hit), "", dtype=object)
    rows = np.nonzero(hit)[0]
    out[rows] = [fmt(*values) for values in zip(*(col[rows] for col in columns), strict=True)]
    return out


@dataclass(frozen=True)
class RuleResult:
    """`is_issue` and `confidence` per row, and a one-line `reason` per flagged row."""

    is_issue: np.ndarray
    confidence: np.ndarray
    reason: np.ndarray  # object array; "" where not flagged


def unusable(status: np.ndarray) -> dict[str, RuleResult]:
    """One result per unusable status (corrupt, empty, not_image, ...), all with confidence 1."""
    status = np.asarray(status, dtype=object)
    out = {}
    for s in UNUSABLE_STATUSES:
        hit = status == s
        out[s] = RuleResult(hit, hit.astype(np.float32), np.where(hit, f"scan status: {s}", ""))
    return out


def low_resolution(
    width: np.ndarray, height: np.ndarray, ok: np.ndarray, th: CleanThresholds
) -> RuleResult:
    """Short side below min_short_side_px; confidence grows as the image gets smaller."""
    short = np.fmin(np.asarray(width, float), np.asarray(height, float))
    hit = np.asarray(ok, bool) & (short < th.min_short_side_px)
    conf = np.where(hit, 0.5 + 0.5 * (1 - np.nan_to_num(short) / th.min_short_side_px), 0.0)
    reason = _reasons(hit, lambda s: f"short side {int(s)} px < {th.min_short_side_px}", short)
    return RuleResult(hit, conf.astype(np.float32), reason)


def upscaled(
    width: np.ndarray,
    height: np.ndarray,
    effective_short_side: np.ndarray,
    ok: np.ndarray,
    th: CleanThresholds,
) -> RuleResult:
    """Large enough on paper, but its effective resolution is below min_short_side_px."""
    short = np.fmin(np.asarray(width, float), np.asarray(height, float))
    eff = np.asarray(effective_short_side, float)
    eff_known = np.nan_to_num(eff, nan=np.inf)
    hit = (
        np.asarray(ok, bool)
        & (short >= th.min_short_side_px)
        & (eff_known < th.min_short_side_px)
        & (eff_known * th.upscaled_min_factor <= short)
    )
    conf = np.where(hit, 0.5 + 0.5 * (1 - np.nan_to_num(eff) / th.min_short_side_px), 0.0)
    reason = _reasons(
        hit,
        lambda s, e: f"{int(s)} px short side, but only ~{int(e)} px of real detail",
        short,
        eff,
    )
    return RuleResult(hit, conf.astype(np.float32), reason)


def blank(std_rgb: np.ndarray, ok: np.ndarray, th: CleanThresholds) -> RuleResult:
    """Near-uniform images: a tiny pixel spread in every channel, everywhere.

    The spread is measured on the 32 x 32 box-filtered thumbnail, so sensor or JPEG noise on a
    plain colour stays blank, while a drawing on white (however much white) is not.
    """
    spread = np.fmax.reduce(np.asarray(std_rgb, float), axis=1)  # NaN rows (unread) stay NaN
    flat = np.nan_to_num(spread, nan=np.inf) < th.blank_max_std
    hit = np.asarray(ok, bool) & flat
    conf = np.where(hit, 1 - 0.5 * np.nan_to_num(spread) / th.blank_max_std, 0.0)
    reason = _reasons(hit, lambda sp: f"near-uniform: pixel spread {sp:.1f}", spread)
    return RuleResult(hit, conf.astype(np.float32), reason)
