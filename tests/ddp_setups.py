"""Deliberately broken data-parallel setups for `thresher ddp-check` (tests/test_ddp.py).

Each replaces one piece of thresher's own setup with a mistake people make in real DDP code.
The check runs them in real rank processes, which import this module by name.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

from thresher.train.ddp_check import THRESHER
from thresher.train.step import forward_backward


def _seed_per_rank(seed: int, rank: int) -> None:
    torch.manual_seed(seed + rank)  # the mistake: "so that ranks differ"


class _UnseededShuffle(torch.utils.data.Sampler):
    """Shuffles with fresh OS entropy on every pass, then shards by rank."""

    def __init__(self, weights, seed: int, rank: int, world: int):
        self.n, self.rank, self.world = len(weights), rank, world

    def __len__(self) -> int:
        return self.n // self.world

    def __iter__(self):
        order = np.random.default_rng().permutation(self.n)  # the mistake: no seed
        yield from order[self.rank :: self.world].tolist()


def _skip_backward_on_rank_1(net, x, y, ctx, step, draw, divisor, scaler):
    if os.environ.get("RANK") == "1":  # the mistake: a rank that computes its loss, then
        with torch.no_grad():  # skips backward (say, a batch it judged bad)
            return forward_backward(net, x, y, ctx, step, draw, divisor, _NoBackward())
    return forward_backward(net, x, y, ctx, step, draw, divisor, scaler)


class _NoBackward:
    """A stand-in GradScaler whose scaled loss has no backward to run."""

    def scale(self, loss):
        return self

    def backward(self):
        pass


DIFFERENT_SEED = dataclasses.replace(THRESHER, seed_model=_seed_per_rank)
UNSEEDED_SHUFFLE = dataclasses.replace(
    THRESHER,
    sampler=lambda weights, seed, rank, world: _UnseededShuffle(weights, seed, rank, world),
)
SKIP_BACKWARD = dataclasses.replace(THRESHER, forward_backward=_skip_backward_on_rank_1)
