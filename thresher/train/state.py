"""The run's state: what changes as it trains, what a checkpoint saves and a resume restores.

One object instead of locals shared by closures: the loop advances it, the guards read it,
`checkpoint()` turns it into the checkpoint's plain dict and `restore()` reads one back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from thresher.train import checkpoint


@dataclass
class RunState:
    """Step, place in the data, best accuracy, freeze, and the trained objects themselves."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    net: torch.nn.Module | None = None  # the model as DDP wraps it (the model itself at N=1)
    step: int = 0  # optimizer steps done
    epoch: int = 0
    position: int = 0  # samples of this epoch this rank has drawn
    best: float | None = None  # the best validation accuracy so far
    frozen: bool = False  # the lowest layers are frozen (the recipe's last share of steps)
    lr_scale: float = 1.0  # the numeric guard's rollbacks lower the schedule by this factor
    images: int = 0  # images trained on, every rank and session together
    seconds: float = 0.0  # time in the loop, every session together
    batch: tuple | None = None  # the last micro-batch (x, y), for a guard's diagnosis; not saved

    def __post_init__(self):
        if self.net is None:
            self.net = self.model

    def checkpoint(self, extra: dict, rngs: list | None = None) -> dict:
        """The checkpoint: tensors and plain data only (read back with weights_only=True)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "best": self.best,
            "frozen": self.frozen,
            "lr_scale": self.lr_scale,
            "images": self.images,
            "seconds": self.seconds,
            "rng": checkpoint.rng_state(),
            "rng_ranks": rngs,  # every rank's RNG state (DDP), else None
            **extra,
        }

    def restore(self, ck: dict) -> None:
        """Weights, optimizer, scaler and counters from a checkpoint (not the RNG: see loop)."""
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        self.step, self.epoch, self.position = ck["step"], ck["epoch"], ck["position"]
        self.best, self.frozen = ck["best"], ck["frozen"]
        # Checkpoints from before the run state kept the LR factor with the numeric guard.
        self.lr_scale = ck.get("lr_scale", ck.get("guards", {}).get("lr_scale", 1.0))
        self.images, self.seconds = ck.get("images", 0), ck.get("seconds", 0.0)

    def roll_back(self, snapshot, lr_scale: float) -> None:
        """Back to a guard's snapshot of a good state, with a new LR factor."""
        self.model.load_state_dict(snapshot.model)
        self.opt.load_state_dict(snapshot.optimizer)
        self.scaler.load_state_dict(snapshot.scaler)
        self.opt.zero_grad(set_to_none=True)
        self.step, self.lr_scale = snapshot.step, lr_scale
