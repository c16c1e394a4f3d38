"""The device-side augmentation: per-sample seeded, batched, in range, torchvision's maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from thresher.config import Recipe
from thresher.data.batch_transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentParams,
    BatchAugment,
    augment_params,
    color_jitter,
    rotate,
    to_float,
)


def _images(n: int, side: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)


def test_each_samples_parameters_are_a_function_of_its_seed_alone():
    seeds = np.array([7, 123456789, 2**62 + 5, 0, 99], dtype=np.int64)
    batch = augment_params(seeds, rotation=30, jitter=0.2)
    for i, s in enumerate(seeds):
        alone = augment_params(np.array([s]), rotation=30, jitter=0.2)
        for name in ("angle_deg", "brightness", "contrast", "saturation"):
            assert getattr(alone, name)[0] == getattr(batch, name)[i]
    # The same seed in another batch, in another place, draws the same.
    again = augment_params(seeds[::-1].copy(), rotation=30, jitter=0.2)
    assert torch.equal(again.angle_deg.flip(0), batch.angle_deg)
    # Different seeds draw differently, and the streams are not one another.
    assert len(set(batch.angle_deg.tolist())) == len(seeds)
    assert not torch.equal(batch.brightness, batch.contrast)


def test_parameters_cover_the_recipes_ranges():
    p = augment_params(np.arange(20_000), rotation=30, jitter=0.2)
    assert -30 <= p.angle_deg.min() < -29 and 29 < p.angle_deg.max() <= 30
    for f in (p.brightness, p.contrast, p.saturation):
        assert 0.8 <= f.min() < 0.81 and 1.19 < f.max() <= 1.2
        assert abs(f.mean().item() - 1.0) < 0.01
    strong = augment_params(np.arange(1000), rotation=0, jitter=1.5)
    assert strong.brightness.min() >= 0  # max(0, 1 - j), as torchvision clips it
    assert (strong.angle_deg == 0).all()


def test_a_batch_of_n_equals_n_batches_of_one():
    aug = BatchAugment(rotation=30, color_jitter=0.2)
    images, seeds = _images(6), torch.tensor([3, 1, 4, 1, 5, 9]) * 1_000_003
    whole = aug(images, seeds)
    ones = torch.cat([aug(images[i : i + 1], seeds[i : i + 1]) for i in range(6)])
    assert torch.equal(whole, ones)
    assert not torch.equal(whole[1], whole[3])  # the same seed, other pixels: another output
    same = aug(images[[1, 1]], seeds[[1, 3]])
    assert torch.equal(same[0], same[1])  # same pixels, same seed: the same augmentation


def test_values_stay_in_range():
    aug = BatchAugment(rotation=180, color_jitter=0.9)
    x = aug(_images(16, 32), torch.arange(16))
    lo = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])
    hi = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])
    assert x.dtype == torch.float32 and x.shape == (16, 3, 32, 32) and torch.isfinite(x).all()
    assert (x >= lo.view(1, 3, 1, 1) - 1e-5).all() and (x <= hi.view(1, 3, 1, 1) + 1e-5).all()
    plain = BatchAugment()(_images(2), torch.arange(2))  # nothing but the normalisation
    want = TF.normalize(to_float(_images(2)), list(IMAGENET_MEAN), list(IMAGENET_STD))
    assert torch.allclose(plain, want, atol=1e-6)


def test_rotation_turns_the_picture_and_fills_black():
    x = to_float(_images(1, 16))
    assert torch.allclose(rotate(x, torch.zeros(1)), x, atol=1e-5)
    quarter = rotate(x, torch.tensor([90.0]))
    turned = [torch.rot90(x, k, dims=(-2, -1)) for k in (1, 3)]
    assert min((quarter - t).abs().max().item() for t in turned) < 1e-4
    corner = rotate(torch.ones(1, 3, 32, 32), torch.tensor([45.0]))
    assert corner[0, :, 0, 0].max() == 0 and corner[0, :, 16, 16].min() > 0.99


def test_colour_jitter_is_torchvisions_maths_per_sample():
    x = to_float(_images(3, 20))
    p = AugmentParams(torch.zeros(3), torch.tensor([0.8, 1.0, 1.2]),
                      torch.tensor([1.1, 0.85, 1.0]), torch.tensor([0.9, 1.2, 0.8]))  # fmt: skip
    got = color_jitter(x, p)
    for i in range(3):
        want = TF.adjust_brightness(x[i], p.brightness[i].item())
        want = TF.adjust_contrast(want, p.contrast[i].item())
        want = TF.adjust_saturation(want, p.saturation[i].item())
        assert torch.allclose(got[i], want, atol=1e-5), i


def test_the_workers_crop_and_flip_in_uint8_at_the_recipe_size():
    from PIL import Image

    from thresher.data.transforms import eval_transform, train_transform, train_view_px

    r = Recipe(image_size=32, crop_scale=(0.5, 1.0))
    img = Image.new("RGB", (50, 40), (90, 100, 110))
    for tf in (train_transform(r), eval_transform(r)):
        x = tf(img)
        assert type(x) is torch.Tensor and x.dtype == torch.uint8 and x.shape == (3, 32, 32)
    assert train_view_px(Recipe(image_size=224, crop_scale=(0.5, 1.0))) == 317  # 224 / sqrt(.5)
    grey = train_transform(r)(Image.new("L", (40, 40), 7))  # any mode comes out RGB
    assert grey.shape == (3, 32, 32) and (grey == 7).all()


def test_a_pipeline_giving_neither_uint8_nor_an_image_is_a_clear_error():
    from thresher.data.transforms import to_uint8_chw
    from thresher.errors import ThresherError

    with pytest.raises(ThresherError, match="uint8"):
        to_uint8_chw(torch.zeros(3, 8, 8))
