"""Data-parallel training across processes: one seed, sharded data, one writer.

A run of N processes (`thresher train --nproc N`, or `torchrun ... -m thresher.train` on
several nodes) is the single-process run with its global batch split N ways:

- every rank seeds torch with the recipe's seed before building the model, so all start from
  the same weights (DDP's broadcast at wrap would hide a difference in the weights, not in
  anything else drawn from that seed);
- then each rank re-seeds with `rank_seed(seed, rank)`: dropout and drop path differ per rank
  (with one stream, every rank would drop the same units on different images);
- the sampler deals each epoch's shuffled list round-robin (rank r takes positions r, r+N, ...)
  and a sample's augmentation seed is a hash of its global position, so the N ranks' first
  micro-batches are, sample for sample and pixel for pixel, the single-process global batch;
- gradients are averaged by DDP (no_sync on all but the last micro-batch of an accumulation);
  the loss and the stop flag are agreed by all-reduce, so every guard verdict and every stop
  happens on every rank at the same step;
- only rank 0 writes metrics, checkpoints and the report; a checkpoint keeps every rank's RNG
  state, so a resumed run goes on as the uninterrupted one would.

`batch_size` is per process: the global batch is batch_size x grad_accum x N. The learning
rate is not scaled with N (scale it in the recipe when N changes the global batch).
`thresher ddp-check` (train/ddp_check.py) verifies these claims on a recipe's first step.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: its rank, the world size, and its GPU index on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> Ranks:
    """The ranks torchrun set in the environment (one process when it set none)."""
    return Ranks(
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def init(timeout_s: float = 3600) -> tuple[Ranks, torch.device]:
    """Join the process group (NCCL on GPUs, gloo on CPUs) and pick this rank's device.

    The timeout is long on purpose: a rank the thermal guard pauses holds the others at the
    next all-reduce until its GPU cools, and that must not end the run.
    """
    ranks = from_env()
    if torch.cuda.is_available():
        device = torch.device("cuda", ranks.local_rank if ranks.world > 1 else 0)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if ranks.world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return ranks, device


def finish() -> None:
    """Leave the process group (a clean exit, not a torn connection the others time out on)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's own RNG stream (dropout, drop path) once the model is built."""
    from thresher.bits import splitmix64

    h = splitmix64(np.uint64(seed & (2**64 - 1)) ^ np.uint64(0x5EED))
    return int(splitmix64(h ^ np.uint64(rank)) >> np.uint64(1))


def seed_model(seed: int, rank: int) -> None:
    """Before the model is built: the same seed on every rank, so the same initial weights."""
    torch.manual_seed(seed)


def seed_rank(seed: int, rank: int) -> None:
    """After the model is built: each rank its own stream for dropout and drop path."""
    torch.manual_seed(rank_seed(seed, rank))


def wrap(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """The model as DDP sees it (itself in a 1-process run). Call again after a freeze."""
    if ranks.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def no_sync(net: torch.nn.Module, last: bool):
    """Skip DDP's gradient all-reduce on all but the last micro-batch of an accumulation."""
    return nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync()


def mean(value: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The mean of a scalar over all ranks (itself in a 1-process run)."""
    if ranks.world == 1:
        return value
    v = value.detach().clone()
    dist.all_reduce(v)
    return v / ranks.world


def anyone(flag: bool, ranks: Ranks) -> bool:
    """True on every rank when it is true on any (a stop asked of one rank stops all)."""
    if ranks.world == 1:
        return flag
    t = torch.tensor([int(flag)], device=_collective_device())
    dist.all_reduce(t)
    return bool(t.item())


def total(value: int, ranks: Ranks) -> int:
    """The sum of an integer over all ranks."""
    if ranks.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.long, device=_collective_device())
    dist.all_reduce(t)
    return int(t.item())


def gather(obj, ranks: Ranks) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if ranks.world == 1:
        return [obj]
    out = [None] * ranks.world
    dist.all_gather_object(out, obj)
    return out


def _collective_device() -> torch.device:
    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
