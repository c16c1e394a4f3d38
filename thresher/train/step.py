"""One optimizer step's pieces: the micro-step (mix, forward, loss, backward) and its context.

The same function runs in `thresher train` and in `thresher ddp-check`, which compares what it
does in 1 and in N processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from thresher.config import Recipe
from thresher.data.balance import minority_classes, minority_cutmix, smooth_one_hot
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
