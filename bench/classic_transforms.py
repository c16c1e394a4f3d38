"""thresher's augmentation as it was before issue #13, for the benches' side-by-side runs.

Every step per image in the DataLoader workers, on PIL images, ending in a normalised float32
tensor (what a plain PyTorch loop does): RandomResizedCrop, flip, rotation, colour jitter, the
tensor conversion and normalisation. thresher itself now crops and flips in uint8 in the
workers and does the rest batched on the training device (thresher/data/batch_transforms.py).
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from thresher.config import Recipe
from thresher.data.batch_transforms import IMAGENET_MEAN, IMAGENET_STD


def to_float_tensor() -> list:
    """PIL -> normalised float32 CHW, per image."""
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]  # fmt: skip


def classic_train_transform(recipe: Recipe, crop_only: bool = False):
    """The whole recipe per image, float32 out (crop_only: crop + flip, a plain loop's)."""
    steps = [
        v2.RandomResizedCrop(recipe.image_size, scale=recipe.crop_scale, antialias=True),
        v2.RandomHorizontalFlip(recipe.hflip),
    ]
    if recipe.rotation and not crop_only:
        steps.append(v2.RandomRotation(recipe.rotation))
    if recipe.color_jitter and not crop_only:
        j = recipe.color_jitter
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    return v2.Compose([*steps, *to_float_tensor()])
