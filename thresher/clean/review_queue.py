"""The review queue: the files where a human's decision changes the most outcomes.

Not the obvious cases (a corrupt file, a byte copy, a 100 px thumbnail: rules settle those),
but the doubtful ones: label-error decisions near their boundary, duplicates whose similarity
sits near the threshold, quality scores near their cut. Each candidate gets a `doubt` in 0-1,
highest where the automatic decision is most likely wrong; the queue is the top
`review_fraction` of all files by doubt, in that order, so the first minutes change the most.
"""

from __future__ import annotations

import numpy as np


def label_doubt(probs: np.ndarray, labels: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """How likely the automatic label decision is wrong, 0-1, for a reviewer to settle.

    The weakest flags first (flagged, yet the given label still has high probability: 0.5-1),
    then the nearest misses (not flagged, yet the given label has low probability: 0-0.5).
    On Fashion-MNIST with 17% flips, a perfect reviewer of the top 10% in this order lifts
    label-error F1 from 0.81 to 0.95, where the strongest flags first adds nothing
    (bench/clean_quality.py).
    """
    given = probs[np.arange(len(labels)), labels]
    return np.where(flagged, 0.5 + 0.5 * given, 0.5 * (1.0 - given))


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
