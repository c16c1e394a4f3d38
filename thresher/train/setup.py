"""One setup for `thresher train` and `thresher ddp-check`: the recipe and manifest made a run.

`setup(recipe, manifest, ranks, device)` builds the run's parts (datasets, sampler, model,
optimizer, schedule, scaler, step context) in one fixed order, so that seeding and data
dealing can never drift between what trains and what ddp-check verifies. The four pieces that
a data-parallel run gets wrong (seeding before and after the model, the sampler, the
micro-step) come from `Pieces`; ddp-check swaps one at a time to show it catches the mistake.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from thresher.config import Recipe
from thresher.data.balance import BalancedSampler
from thresher.data.batch_transforms import BatchAugment, BatchCollate
from thresher.data.dataset import ImageDataset
from thresher.data.manifest import Manifest, load_manifest
from thresher.data.skipped import SkippedSamples
from thresher.data.transforms import eval_transform, eval_view_px, train_transform, train_view_px
from thresher.devices import amp_dtype
from thresher.errors import ThresherError
from thresher.train.distributed import Ranks, seed_model, seed_rank
from thresher.train.model import create_model, lowest_layers, param_groups, use_channels_last
from thresher.train.optim import optimizer, scheduler
from thresher.train.step import (
    StepContext,
    device_inputs,
    forward_backward,
    step_context,
)


@dataclass(frozen=True)
class Pieces:
    """The pieces of a data-parallel step that can go wrong, as the training loop uses them."""

    seed_model: Callable[[int, int], None]  # (seed, rank): before the model is built
    seed_rank: Callable[[int, int], None]  # (seed, rank): after, for dropout and drop path
    sampler: Callable  # (weights, seed, rank, world) -> a Sampler of (index, sample_seed)
    forward_backward: Callable  # train.step.forward_backward's signature


# The very functions the training loop calls: a change to the loop is a change to what passes.
THRESHER = Pieces(seed_model, seed_rank, BalancedSampler, forward_backward)


@dataclass
class Parts:
    """What a run is made of; built once by `setup`, never changed by the loop."""

    recipe: Recipe
    manifest: Manifest
    ranks: Ranks
    device: torch.device
    amp: torch.dtype | None
    train_rows: np.ndarray
    train_ds: ImageDataset
    val_ds: ImageDataset
    weights: np.ndarray  # each training row's sampling weight
    sampler: torch.utils.data.Sampler
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: object  # timm's scheduler: step_update(step) sets the LR of any step
    scaler: torch.amp.GradScaler
    ctx: StepContext
    to_freeze: list[str]  # the lowest layers' parameter names
    freeze_at: int  # the step at which they freeze
    skipped: SkippedSamples  # samples the user transform could not handle
    label_error_share: float | None  # from the export, for the plateau diagnosis
    pieces: Pieces
    augment: BatchAugment  # rotation, jitter, normalisation: on the device, per sample
    channels_last: bool  # the model and its inputs in NHWC memory format

    def inputs(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """A training loader batch as the model's inputs on this run's device."""
        return device_inputs(batch, self.device, self.augment, self.channels_last)

    @property
    def collate(self) -> BatchCollate:
        """The training loaders' collate: on a CPU it also runs the batch transforms."""
        return BatchCollate(self.augment, in_workers=self.device.type == "cpu")

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.classes)


def setup(
    r: Recipe,
    data: Manifest | Path | str,
    ranks: Ranks,
    device: torch.device,
    log=print,
    pieces: Pieces = THRESHER,
) -> Parts:
    """The run's parts, in the order the seeds need: model weights, then each rank's stream."""
    m = data if isinstance(data, Manifest) else load_manifest(data)
    train_rows, val_rows = np.nonzero(~m.is_val)[0], np.nonzero(m.is_val)[0]
    if len(train_rows) < r.batch_size:
        raise ThresherError(
            f"{len(train_rows)} training images, fewer than one batch ({r.batch_size})"
        )
    n_classes = len(m.classes)
    amp = amp_dtype(r.amp, device.type)
    if r.amp == "fp16" and amp is None:
        log("fp16 mixed precision needs CUDA: this run is float32 on the CPU (amp: bf16 works)")
    pieces.seed_model(r.seed, ranks.rank)
    model = create_model(r, n_classes, log).to(device)
    channels_last = use_channels_last(r.channels_last, device, model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if r.sync_batchnorm and ranks.world > 1:
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            log("sync_batchnorm needs CUDA: batch-norm statistics stay per process on CPUs")
    pieces.seed_rank(r.seed, ranks.rank)  # same weights everywhere; now each its stream
    head_scale = (r.head_lr or r.lr) / r.lr
    opt = optimizer(
        r, param_groups(model, r.weight_decay_backbone, r.weight_decay_head, head_scale)
    )
    skipped = SkippedSamples()
    train_ds, weights = training_data(r, m, train_rows, skipped)
    val_ds = ImageDataset(
        m.paths[val_rows], m.targets[val_rows], eval_transform(r), eval_view_px(r)
    )
    return Parts(
        recipe=r,
        manifest=m,
        ranks=ranks,
        device=device,
        amp=amp,
        train_rows=train_rows,
        train_ds=train_ds,
        val_ds=val_ds,
        weights=weights,
        sampler=pieces.sampler(weights, r.seed, ranks.rank, ranks.world),
        model=model,
        opt=opt,
        sched=scheduler(opt, r),
        scaler=torch.amp.GradScaler(device.type, enabled=amp is torch.float16),
        ctx=step_context(r, m.targets[train_rows], n_classes, device, amp),
        to_freeze=lowest_layers(model, r.freeze_groups),
        freeze_at=math.ceil(r.total_steps * (1 - r.freeze_last_fraction)),
        skipped=skipped,
        label_error_share=label_error_share(data) if not isinstance(data, Manifest) else None,
        pieces=pieces,
        augment=BatchAugment.from_recipe(r),
        channels_last=channels_last,
    )


def training_data(
    r: Recipe, m: Manifest, rows: np.ndarray, skipped: SkippedSamples | None = None
) -> tuple[ImageDataset, np.ndarray]:
    """The training rows of a manifest as the recipe augments them, and their sampling weights."""
    ds = ImageDataset(m.paths[rows], m.targets[rows], train_transform(r), train_view_px(r), skipped)
    weights = m.weights[rows] if r.oversample else np.ones(len(rows), np.float32)
    return ds, weights


def set_lr(sched, opt, step: int, scale: float) -> None:
    """The schedule's learning rate for `step`, times the numeric guard's rollback factor."""
    sched.step_update(step)
    if scale != 1.0:
        for group in opt.param_groups:
            group["lr"] *= scale


def label_error_share(data: Path | str) -> float | None:
    """The share of labels clean flagged, as the export beside the manifest recorded it."""
    p = Path(data)
    summary = (p if p.is_dir() else p.parent) / "export.json"
    try:
        share = json.loads(summary.read_text())["label_error_share"]
        return float(share) if share is not None else None
    except (OSError, KeyError, ValueError, TypeError):
        return None
