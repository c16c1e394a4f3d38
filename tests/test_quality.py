"""Blank statistics and the effective-resolution estimate, on images with known answers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from thresher.demo import draw_object
from thresher.images import decode
from thresher.scan import quality


def _view(im: Image.Image, view_px=512):
    b = io.BytesIO()
    im.save(b, "JPEG", quality=88)
    d = decode(b.getvalue(), view_px, 10**9)
    return d, np.asarray(d.view.convert("L"))


def test_pixel_stats_of_blank_noisy_and_two_colour_images():
    rng = np.random.default_rng(0)
    blank = np.full((64, 64, 3), (20, 200, 90), np.uint8)
    noisy = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    halves = np.zeros((64, 64, 3), np.uint8)
    halves[:, 32:] = 255
    s = quality.pixel_stats(np.stack([blank, noisy, halves]))
    assert s["std_r"][0] == 0 and s["std_g"][0] == 0
    assert s["entropy"][0] == 0 and s["dominant_share"][0] == 1.0
    assert s["std_r"][1] > 60 and s["entropy"][1] > 7.5 and s["dominant_share"][1] < 0.01
    assert s["entropy"][2] == pytest.approx(1.0) and s["dominant_share"][2] == 0.5
    assert s["std_b"][2] == pytest.approx(127.5, abs=0.01)


def test_pixel_stats_batch_equals_single_images():
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    whole = quality.pixel_stats(batch)
    for i in range(5):
        one = quality.pixel_stats(batch[i : i + 1])
        for k in whole:
            assert whole[k][i] == pytest.approx(one[k][0])


@pytest.mark.parametrize("seed", range(4))
def test_upscaled_200x300_to_4k_is_told_apart_from_a_real_4k_image(seed):
    rng = np.random.default_rng(seed)
    label = ["circle", "square", "star", "cross"][seed]
    real = draw_object(label, 2160, 3840, rng)
    fake = draw_object(label, 200, 300, rng).resize((2160, 3240), Image.Resampling.BICUBIC)
    d_real, g_real = _view(real)
    d_fake, g_fake = _view(fake)
    _, eff_real = quality.effective_short_side(g_real, min(d_real.width, d_real.height))
    slope, eff_fake = quality.effective_short_side(g_fake, min(d_fake.width, d_fake.height))
    assert eff_real == 2160
    assert eff_fake < 512
    assert 100 <= eff_fake <= 400  # near the true 200, within the estimate's precision
    assert slope > quality.SMOOTH_SLOPE


def test_moderately_upscaled_image_is_estimated_near_its_source_size():
    rng = np.random.default_rng(9)
    src = draw_object("triangle", 400, 600, rng)
    d, g = _view(src.resize((1000, 1500), Image.Resampling.LANCZOS), view_px=1000)
    _, eff = quality.effective_short_side(g, 1000)
    assert 250 <= eff <= 750  # from 400: clearly below the 1000 it claims


def test_upscale_factor_reads_the_slope_crossing():
    assert quality.upscale_factor(np.array([1.0, 0.9, 0.9, 0.9])) == 1.0
    # smooth up to the scale between d=2..4 and d=4..8: factor between 2 and 4
    f = quality.upscale_factor(np.array([1.95, 1.6, 1.2, 1.0]))
    assert 2.0 < f < 4.0
    assert quality.upscale_factor(np.array([2.0, 2.0, 2.0, 2.0])) > 8
