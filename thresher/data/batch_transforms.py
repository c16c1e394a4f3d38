"""The recipe's augmentation after the crop, batched on the training device: tensors in, out.

The workers decode, crop and flip in uint8 (data/transforms.py); the batch travels as uint8
(4x fewer bytes than float32, pinned on CUDA) and everything per-pixel in float runs here, on
the whole batch at once: rotation, colour jitter, normalisation. The same code runs on a CPU.

Each sample's parameters (angle, brightness, contrast, saturation) are a function of its
augmentation seed alone (the sampler's hash of seed, epoch and global position), drawn with
SplitMix64, not from a global RNG: a resumed run draws what the uninterrupted one drew, and
any rank draws the same for the same sample. On a CPU a batch of N also equals N batches of 1
bit for bit (tested); CUDA sizes its reduction kernels by the batch, so there it is equal to
rounding only (resume and ddp-check compare batches of equal size, so they do not rely on it).

Against torchvision's per-image transforms it replaces (v2.RandomRotation, v2.ColorJitter):
rotation is bilinear (torchvision's default is nearest) with the same black fill, and the
jitter applies brightness, contrast, saturation in that fixed order (torchvision shuffles the
order per image). Factors, ranges and the greyscale weights are torchvision's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from thresher.bits import splitmix64

if TYPE_CHECKING:
    from thresher.config import Recipe

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights

# One stream per parameter: the seed is mixed with a distinct odd constant before hashing.
_ANGLE, _BRIGHTNESS, _CONTRAST, _SATURATION = 1, 2, 3, 4


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample parameters of one batch, each a (B,) float32 tensor."""

    angle_deg: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor

    def to(self, device: torch.device) -> AugmentParams:
        return AugmentParams(*(t.to(device, non_blocking=True) for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return self.angle_deg, self.brightness, self.contrast, self.saturation


def uniform(seeds: np.ndarray, stream: int) -> np.ndarray:
    """A uniform draw in [0, 1) per seed, for one named stream: a pure function of both."""
    salt = np.uint64((stream * 0x9E3779B97F4A7C15) % 2**64)
    with np.errstate(over="ignore"):
        bits = splitmix64(np.asarray(seeds).astype(np.uint64) ^ salt)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def augment_params(seeds: np.ndarray, rotation: float, jitter: float) -> AugmentParams:
    """Angle in [-rotation, rotation] and jitter factors in [max(0, 1-j), 1+j], per seed."""
    lo = max(0.0, 1.0 - jitter)

    def factor(stream: int) -> torch.Tensor:
        return torch.from_numpy((lo + (1.0 + jitter - lo) * uniform(seeds, stream)).astype("f4"))

    angle = (2.0 * uniform(seeds, _ANGLE) - 1.0) * rotation
    return AugmentParams(
        torch.from_numpy(angle.astype("f4")),
        factor(_BRIGHTNESS),
        factor(_CONTRAST),
        factor(_SATURATION),
    )


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 in [0, 1], on the images' device (floats are kept)."""
    if images.is_floating_point():  # a recipe's user_transform made float samples
        return images.float()
    return images.float().div_(255.0)


@lru_cache(maxsize=16)
def _channels(values: tuple[float, float, float], device: torch.device) -> torch.Tensor:
    """A (1, 3, 1, 1) float32 constant on `device`, made once.

    torch.tensor(..., device="cuda") is a blocking copy: made per batch, it would stall the
    CPU until the GPU's queue drains, and the next step could not be queued behind it.
    """
    return torch.tensor(values, dtype=torch.float32, device=device).view(1, 3, 1, 1)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet mean / std normalisation of float images in [0, 1] (new tensor)."""
    return (x - _channels(IMAGENET_MEAN, x.device)) / _channels(IMAGENET_STD, x.device)


def rotate(x: torch.Tensor, angle_deg: torch.Tensor) -> torch.Tensor:
    """Rotate each image about its centre by its angle (bilinear, black outside the picture).

    The sampling grid is built with elementwise arithmetic (no batched matmul), so an image's
    result never depends on the other images of its batch.
    """
    b, _, h, w = x.shape
    theta = angle_deg.to(x.device, torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(theta).view(b, 1, 1), torch.sin(theta).view(b, 1, 1)
    # Output pixel centres in pixels from the image centre (align_corners=False convention).
    ys = torch.arange(h, device=x.device, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, device=x.device, dtype=torch.float32) - (w - 1) / 2
    yy, xx = ys.view(1, h, 1), xs.view(1, 1, w)
    src_x = cos * xx - sin * yy  # where each output pixel reads from, inverse rotation
    src_y = sin * xx + cos * yy
    # A pixel c pixels from the centre sits at 2c / size in grid_sample's [-1, 1] coordinates.
    grid = torch.stack([src_x * (2 / w), src_y * (2 / h)], dim=-1)
    return torch.nn.functional.grid_sample(
        x, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luminance with torchvision's weights."""
    return (x * _channels(GREY, x.device)).sum(dim=1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other, clamped to [0, 1] (one lerp: fewer passes)."""
    return torch.lerp(other.expand_as(x), x, factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def color_jitter(x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
    """Brightness, contrast, saturation, each by its per-sample factor (torchvision's maths)."""
    x = (p.brightness.view(-1, 1, 1, 1) * x).clamp_(0.0, 1.0)
    # The per-image mean luminance, reduced one axis at a time: each reduction is short, so no
    # thread splits an image's sum and the result does not depend on the batch's size.
    mean = grey(x).mean(dim=-1, keepdim=True).mean(dim=-2, keepdim=True)
    x = _blend(x, mean, p.contrast)
    return _blend(x, grey(x), p.saturation)


class BatchAugment:
    """Rotation, colour jitter and normalisation of a uint8 batch, per-sample seeded."""

    def __init__(self, rotation: float = 0.0, color_jitter: float = 0.0):
        self.rotation, self.jitter = float(rotation), float(color_jitter)

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> BatchAugment:
        """The recipe's rotation (degrees) and colour jitter."""
        return cls(recipe.rotation, recipe.color_jitter)

    def __call__(self, images: torch.Tensor, seeds: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 (B, 3, H, W) on the device and (B,) int64 seeds -> normalised float32."""
        x = to_float(images)
        if self.rotation or self.jitter:
            s = seeds.cpu().numpy() if isinstance(seeds, torch.Tensor) else np.asarray(seeds)
            p = augment_params(s, self.rotation, self.jitter).to(x.device)
            if self.rotation:
                x = rotate(x, p.angle_deg)
            if self.jitter:
                x = color_jitter(x, p)
        return normalize(x)


class AugmentedBatch(NamedTuple):
    """A batch whose device-side transforms already ran, in a CPU run's loader workers."""

    inputs: torch.Tensor  # normalised float32
    target: torch.Tensor
    seed: torch.Tensor


class BatchCollate:
    """The training loader's collate: stack the samples; in a CPU run, augment them there too.

    On a CPU the batch transforms run in the DataLoader worker (one thread, beside the model
    in the training process, as the per-image transforms did) instead of in the training
    process, whose threads would fight the workers for the cores. Same code, same numbers:
    each sample's result is a function of its pixels and seed alone.
    """

    def __init__(self, augment: BatchAugment, in_workers: bool):
        self.augment, self.in_workers = augment, in_workers

    def __call__(self, samples: list):
        batch = torch.utils.data.default_collate(samples)
        if not self.in_workers or len(batch) < 3:  # no seeds: augmented in device_inputs
            return batch
        return AugmentedBatch(self.augment(batch[0], batch[2]), batch[1], batch[2])
