"""One optimizer step's pieces: the micro-step (mix, forward, loss, backward) and its context.

The same function runs in `thresher train` and in `thresher ddp-check`, which compares what it
does in 1 and in N processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from thresher.config import Recipe
from thresher.data.balance import minority_classes, minority_cutmix, smooth_one_hot
from thresher.data.batch_transforms import AugmentedBatch, BatchAugment
from thresher.errors import ThresherError


@dataclass(frozen=True)
class StepContext:
    """What a micro-step needs besides its batch: the recipe and the run's fixed choices."""

    recipe: Recipe
    n_classes: int
    minority: torch.Tensor  # (K,) bool: the classes minority CutMix pastes from
    mixer: object | None  # timm's Mixup when cutmix is "timm"
    amp_dtype: torch.dtype | None


def step_context(
    r: Recipe, targets: np.ndarray, n_classes: int, device: torch.device, amp: torch.dtype | None
) -> StepContext:
    """The micro-step's fixed choices: minority classes (of the training targets), the mixer."""
    counts = np.bincount(targets, minlength=n_classes)
    minority = torch.from_numpy(minority_classes(counts, r.minority_below)).to(device)
    mixer = _timm_mixup(r, n_classes) if r.cutmix == "timm" else None
    return StepContext(r, n_classes, minority, mixer, amp)


def device_inputs(
    batch, device: torch.device, augment: BatchAugment, channels_last: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch (uint8 images, targets, seeds) as the model's inputs on the device.

    The uint8 batch is copied (asynchronously from pinned memory on CUDA), then rotated,
    jittered and normalised there with each sample's own parameters (unless the loader's
    collate already did, on a CPU). A sampler that gives no seeds (a user's, in ddp-check)
    gets fresh random ones: not reproducible, as it asked.
    """
    images, y = batch[0], batch[1]
    if isinstance(batch, AugmentedBatch):
        x = images.to(device, non_blocking=True)
    else:
        if len(batch) > 2:
            seeds = batch[2]
        else:
            fresh = torch.Generator().manual_seed(int.from_bytes(os.urandom(7), "little"))
            seeds = torch.randint(0, 2**62, (len(y),), generator=fresh)
        x = augment(images.to(device, non_blocking=True), seeds)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def forward_backward(
    net: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ctx: StepContext,
    step: int,
    draw: int,
    divisor: int,
    scaler,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One micro-batch: mix, forward, soft-target loss, backward of loss / divisor.

    `draw` numbers the micro-batch within the optimizer step over all ranks (micro x world +
    rank), so CutMix draws the same box for the same images at any world size. Returns the
    detached loss and logits.
    """
    r = ctx.recipe
    if ctx.mixer is not None:
        np.random.seed((r.seed * 1_000_003 + step * 1_000 + draw) % 2**32)
        x, soft = ctx.mixer(x, y)  # timm's Mixup smooths the labels itself
    else:
        soft = smooth_one_hot(y, ctx.n_classes, r.label_smoothing)
        if r.cutmix == "minority":
            rng = np.random.default_rng([r.seed, step, draw])
            x, soft = minority_cutmix(x, soft, y, ctx.minority, r.cutmix_prob, r.cutmix_alpha, rng)
    with torch.autocast(x.device.type, dtype=ctx.amp_dtype, enabled=ctx.amp_dtype is not None):
        logits = net(x)
    loss = torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
    scaler.scale(loss / divisor).backward()
    return loss.detach(), logits.detach()


def _timm_mixup(r: Recipe, n_classes: int):
    from timm.data import Mixup

    if r.batch_size % 2:
        raise ThresherError("cutmix: timm needs an even batch_size")
    return Mixup(
        mixup_alpha=r.mixup_alpha,
        cutmix_alpha=r.cutmix_alpha,
        prob=r.cutmix_prob,
        label_smoothing=r.label_smoothing,
        num_classes=n_classes,
    )
