"""The review queue: the files where a human's decision changes the most outcomes.

Not the obvious cases (a corrupt file, a byte copy, a 100 px thumbnail: rules settle those),
but the doubtful ones: images whose label the out-of-sample views are split about, duplicates
whose similarity sits near the threshold, quality scores near their cut. Each candidate gets a
`doubt` in 0-1, highest where the automatic decision is a coin flip; the queue is the top
`review_fraction` of all files by doubt, in that order, so the first minutes settle the
closest calls.
"""

from __future__ import annotations

import numpy as np


def label_doubt(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1 where p(given label) equals the best other class's probability, 0 where one dominates."""
    n = len(labels)
    given = probs[np.arange(n), labels]
    other = probs.copy()
    other[np.arange(n), labels] = -1
    best_other = other.max(axis=1)
    return np.clip(1.0 - np.abs(given - best_other) / np.maximum(given + best_other, 1e-9), 0, 1)


def threshold_doubt(confidence: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """Doubt of a thresholded rule: highest for flagged items whose confidence is lowest."""
    conf = np.nan_to_num(np.asarray(confidence, dtype=np.float64))
    return np.where(flagged, np.clip(1.0 - 2.0 * np.abs(conf - 0.5), 0, 1), 0.0)


def review_queue(doubt: np.ndarray, n_files: int, fraction: float) -> np.ndarray:
    """Row indices of the queue, most doubtful first: at most fraction x n_files, doubt > 0."""
    size = int(round(fraction * n_files))
    order = np.argsort(-doubt, kind="stable")
    order = order[doubt[order] > 0]
    return order[:size]
