"""The optimizer (Lion by default, from timm) and the learning-rate schedule, from the recipe."""

from __future__ import annotations

import torch

from thresher.config import Recipe


def optimizer(r: Recipe, groups: list[dict]) -> torch.optim.Optimizer:
    """Lion (timm), AdamW or SGD over the parameter groups (each with its weight decay)."""
    if r.optimizer == "lion":
        from timm.optim import Lion

        return Lion(groups, lr=r.lr, betas=r.betas)
    if r.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=r.lr, betas=r.betas)
    return torch.optim.SGD(groups, lr=r.lr, momentum=0.9, nesterov=True)


def scheduler(opt: torch.optim.Optimizer, r: Recipe):
    """Linear warm-up to `lr` over `warmup_steps`, cosine down to `min_lr` at `total_steps`.

    Counted in optimizer steps (not micro-batches), and stateless: `step_update(step)` sets the
    rate for any step, which is all a resumed run needs.
    """
    from timm.scheduler import CosineLRScheduler

    return CosineLRScheduler(
        opt,
        t_initial=max(r.total_steps - r.warmup_steps, 1),
        lr_min=r.min_lr,
        warmup_t=r.warmup_steps,
        warmup_lr_init=r.lr * 1e-3 if r.warmup_steps else r.lr,
        warmup_prefix=True,  # the cosine starts at the peak, after warm-up, and ends at total
        t_in_epochs=False,
    )
