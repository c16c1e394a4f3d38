"""The recipe's augmentation, as torchvision v2 transforms (PIL image in, normalised tensor out)."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from thresher.config import Recipe
from thresher.loading import load_object

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UserTransformError(Exception):
    """The recipe's user_transform raised on a sample (the dataset skips and counts it)."""

    def __init__(self, spec: str, error: Exception):
        first = (str(error).strip().splitlines() or [""])[0][:200]
        super().__init__(f"user_transform {spec} raised {type(error).__name__}: {first}")


class UserTransform:
    """The user's callable, its failures named: one odd image must not end a multi-day run."""

    def __init__(self, fn, spec: str):
        self.fn, self.spec = fn, spec

    def __call__(self, image):
        try:
            return self.fn(image)
        except Exception as e:
            raise UserTransformError(self.spec, e) from e


def train_transform(recipe: Recipe):
    """RandomResizedCrop, flip, rotation, colour jitter, the user's transform, normalise."""
    steps = [
        v2.RandomResizedCrop(recipe.image_size, scale=recipe.crop_scale, antialias=True),
        v2.RandomHorizontalFlip(recipe.hflip),
    ]
    if recipe.rotation:
        steps.append(v2.RandomRotation(recipe.rotation))
    if recipe.color_jitter:
        j = recipe.color_jitter
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    if recipe.user_transform:
        user = load_object(recipe.user_transform, "user_transform")
        steps.append(UserTransform(user, recipe.user_transform))
    return v2.Compose([*steps, *_to_tensor()])


def eval_transform(recipe: Recipe):
    """Resize the short side to size / 0.875, centre crop, normalise (timm's default eval)."""
    return v2.Compose(
        [
            v2.Resize(int(round(recipe.image_size / 0.875)), antialias=True),
            v2.CenterCrop(recipe.image_size),
            *_to_tensor(),
        ]
    )


def _to_tensor():
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
