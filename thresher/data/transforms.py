"""The recipe's per-image augmentation, in the DataLoader workers: PIL image in, uint8 out.

The workers decode, crop and flip; the rest of the recipe's augmentation runs batched on the
training device (data/batch_transforms.py). uint8 is a quarter of float32's bytes through
the worker queues and onto the GPU.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms import v2
from torchvision.transforms.functional import pil_to_tensor

from thresher.config import Recipe
from thresher.errors import ThresherError
from thresher.loading import load_object


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
    """The workers' part: RandomResizedCrop, flip, the user's transform, as a uint8 CHW tensor.

    Rotation, colour jitter and normalisation follow on the whole batch, on the training
    device (data/batch_transforms.py), with per-sample parameters from the same seed.
    """
    steps = [
        v2.RandomResizedCrop(recipe.image_size, scale=recipe.crop_scale, antialias=True),
        v2.RandomHorizontalFlip(recipe.hflip),
    ]
    if recipe.user_transform:
        user = load_object(recipe.user_transform, "user_transform")
        steps.append(UserTransform(user, recipe.user_transform))
        # A user's transform may return a float tensor in [0, 1] (ToTensor's), NaN included
        # (a poisoned sample the numeric guard must see): every sample then travels as float.
        return v2.Compose([*steps, to_float_chw])
    return v2.Compose([*steps, to_uint8_chw])


def eval_transform(recipe: Recipe):
    """Resize the short side to size / 0.875, centre crop (timm's default eval), as uint8 CHW."""
    return v2.Compose(
        [
            v2.Resize(eval_resize(recipe), antialias=True),
            v2.CenterCrop(recipe.image_size),
            to_uint8_chw,
        ]
    )


def eval_resize(recipe: Recipe) -> int:
    """The short side evaluation images are resized to before the centre crop."""
    return int(round(recipe.image_size / 0.875))


def train_view_px(recipe: Recipe) -> int:
    """The short side JPEGs are draft-decoded to for training: sized to the smallest crop.

    RandomResizedCrop takes at least crop_scale[0] of the area, about sqrt(crop_scale[0]) of
    the side; decoding at image_size / that keeps the smallest crop at full resolution while
    a 4000 px photo is still decoded at 1/4 or 1/8 of its size.
    """
    return max(math.ceil(recipe.image_size / math.sqrt(recipe.crop_scale[0])), 64)


def eval_view_px(recipe: Recipe) -> int:
    """The short side JPEGs are draft-decoded to for evaluation (the resize's)."""
    return max(eval_resize(recipe), 64)


def to_float_chw(image) -> torch.Tensor:
    """A PIL image, a uint8 tensor or a float tensor in [0, 1] as (3, H, W) float32 in [0, 1]."""
    if isinstance(image, torch.Tensor) and image.is_floating_point():
        return image.as_subclass(torch.Tensor).float()
    return to_uint8_chw(image).float().div_(255.0)


def to_uint8_chw(image) -> torch.Tensor:
    """A PIL image (or a uint8 tensor from a user transform) as a (3, H, W) uint8 tensor."""
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3:
            raise ThresherError(
                f"the image pipeline must give a uint8 (3, H, W) image, not {image.dtype} "
                f"{tuple(image.shape)} (a user_transform returns a PIL image or a tensor)"
            )
        return image.as_subclass(torch.Tensor)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return pil_to_tensor(image)
