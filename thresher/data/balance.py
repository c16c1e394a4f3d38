"""Class balance in training: an oversampling sampler and minority-aware CutMix.

Both are deterministic functions of (seed, epoch, position) or (seed, step): a resumed run
draws exactly what the uninterrupted run would have drawn, and every DDP rank derives its
share from the same seed.

- Oversampling: each row appears `weight` times per epoch in expectation (floor(w) copies plus
  one more with probability frac(w)); the export's weights bring each minority class up by the
  balancing plan (x3 at most by default). Costs nothing per step; wrong when the minority's few
  images are themselves noisy: repeating them repeats the noise (clean first).
- Minority CutMix: with probability p a batch gets one CutMix box, and every majority-class
  image in it receives that box from a minority-class image of the same batch; targets mix by
  the pasted area. The field report: koala patches on dog photos lifted minority accuracy
  15-20 points. Does nothing to a batch with no minority image (oversample so there are some).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from thresher.errors import ThresherError


def epoch_indices(
    weights: np.ndarray, epoch: int, seed: int, rank: int = 0, world: int = 1
) -> np.ndarray:
    """Row indices of one epoch for one rank: oversampled by `weights`, shuffled by (seed, epoch).

    Every rank gets the same count (the list is padded by wrapping around), as DDP needs.
    """
    w = np.asarray(weights, dtype=np.float64)
    rng = np.random.default_rng([seed, epoch])
    reps = np.floor(w).astype(np.int64) + (rng.random(len(w)) < (w - np.floor(w)))
    idx = np.repeat(np.arange(len(w)), reps)
    rng.shuffle(idx)
    if world > 1 and len(idx):
        pad = (-len(idx)) % world
        idx = np.concatenate([idx, idx[:pad]])
    return idx[rank::world]


def sample_seeds(seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
    """The augmentation seed of each drawn sample: a hash of (seed, epoch, global position).

    The global position is the place in the epoch's whole list, whichever rank draws it: a
    sample gets the same crop at any world size (what `thresher ddp-check` compares).
    """
    from thresher.bits import splitmix64

    h = splitmix64(np.uint64(seed & (2**64 - 1)) ^ np.uint64(epoch))
    return (splitmix64(h ^ np.asarray(positions, dtype=np.uint64)) >> np.uint64(1)).astype(np.int64)


def check_weights(weights: np.ndarray) -> None:
    """Refuse weights no epoch can be drawn from: all zero, negative, or not finite."""
    w = np.asarray(weights, dtype=np.float64)
    if not np.isfinite(w).all() or (w < 0).any():
        raise ThresherError("the manifest's weight column holds negative or non-finite values")
    if len(w) and w.sum() == 0:
        raise ThresherError(
            "every training row of the manifest has weight 0: no sample can be drawn "
            "(fix the weight column, or set `oversample: false` in the recipe)"
        )


class BalancedSampler(torch.utils.data.Sampler):
    """Yields (index, sample_seed) for ImageDataset; resumable at any position in an epoch."""

    def __init__(self, weights: np.ndarray, seed: int = 0, rank: int = 0, world: int = 1):
        check_weights(weights)
        self.weights, self.seed, self.rank, self.world = weights, seed, rank, world
        self.epoch = 0
        self.start = 0  # samples of this epoch already consumed (resume)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return len(epoch_indices(self.weights, self.epoch, self.seed, self.rank, self.world))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        idx = epoch_indices(self.weights, self.epoch, self.seed, self.rank, self.world)
        # One vectorised hash for the epoch: per-sample Python hashing costs the main process
        # CPU that, on a small machine, the workers and the model need.
        where = np.arange(len(idx)) * self.world + self.rank  # positions in the whole epoch
        seeds = sample_seeds(self.seed, self.epoch, where)
        yield from zip(idx[self.start :].tolist(), seeds[self.start :].tolist(), strict=True)


def minority_classes(counts: np.ndarray, below: float = 0.5) -> np.ndarray:
    """Boolean mask of the classes whose count is under `below` x the largest class's count."""
    counts = np.asarray(counts, dtype=np.float64)
    return counts < below * counts.max() if len(counts) else np.zeros(0, dtype=bool)


def smooth_one_hot(targets: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """Label-smoothed one-hot targets: 1 - smoothing + smoothing/K on the class, smoothing/K off."""
    off = smoothing / num_classes
    y = torch.full((len(targets), num_classes), off, device=targets.device)
    return y.scatter_(1, targets[:, None], 1.0 - smoothing + off)


def minority_cutmix(
    images: torch.Tensor,
    soft_targets: torch.Tensor,
    targets: torch.Tensor,
    minority: torch.Tensor,
    prob: float,
    alpha: float,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste one box from minority images onto every majority image of the batch.

    images (B, C, H, W); soft_targets (B, K), already smoothed, so smoothing and mixing combine
    as in timm's Mixup; targets (B,) class indices; minority (K,) bool. Returns new tensors.
    """
    if rng.random() >= prob:
        return images, soft_targets
    is_min = minority[targets]
    src = torch.nonzero(is_min).flatten()
    dst = torch.nonzero(~is_min).flatten()
    if len(src) == 0 or len(dst) == 0:
        return images, soft_targets
    h, w = images.shape[-2:]
    lam = rng.beta(alpha, alpha)  # share of the image that stays
    cut_h, cut_w = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
    cy, cx = rng.integers(h), rng.integers(w)
    y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, h)
    x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, w)
    area = (y1 - y0) * (x1 - x0) / (h * w)  # the real pasted share, after clipping
    if area == 0:
        return images, soft_targets
    pick = src[torch.from_numpy(rng.integers(len(src), size=len(dst))).to(src.device)]
    images = images.clone()
    images[dst, :, y0:y1, x0:x1] = images[pick, :, y0:y1, x0:x1]
    soft_targets = soft_targets.clone()
    soft_targets[dst] = (1 - area) * soft_targets[dst] + area * soft_targets[pick]
    return images, soft_targets
