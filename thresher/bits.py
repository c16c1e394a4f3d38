"""Bit tricks over uint64 arrays: Hamming distance between hashes, SplitMix64 mixing.

A neutral leaf: clean's duplicate finder compares the scan's hashes, and the split, the
balancing sampler and the ranks' seeds all mix integers the same way; none of them reaches
into another stage for it.
"""

from __future__ import annotations

import numpy as np


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance between uint64 hashes (broadcasting)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    return np.bitwise_count(x).astype(np.int64)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A fast, well-mixed 64-bit hash of each value (Steele et al.'s SplitMix64 finaliser)."""
    with np.errstate(over="ignore"):  # the arithmetic is modulo 2**64 on purpose
        z = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
