"""Class imbalance: per-class counts, the imbalance ratio, and the balancing plan training applies.

The plan (the field report's recipe): oversample every class smaller than the largest by
up to `oversample_factor` (x3 by default), never beyond the largest class's count; the
training issue's sampler and minority CutMix apply it.
"""

from __future__ import annotations

import numpy as np


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Files per class, largest first (None labels are left out)."""
    labels = np.asarray([x for x in labels if x is not None], dtype=object)
    if len(labels) == 0:
        return {}
    names, counts = np.unique(labels.astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {str(names[i]): int(counts[i]) for i in order}


def imbalance_ratio(counts: dict[str, int]) -> float:
    """Largest class over smallest class (1.0 = balanced)."""
    if not counts:
        return 1.0
    return max(counts.values()) / max(min(counts.values()), 1)


def balancing_plan(
    counts: dict[str, int], oversample_factor: float = 3.0, target_share: float | None = None
) -> dict[str, float]:
    """Per class, the oversampling factor (at least 1).

    By default min(largest / count, oversample_factor): each class comes up by at most the
    factor, never past the largest class. With `target_share`, each class comes up to that
    share of the largest class instead (0.5: every class at least half the largest), uncapped.
    """
    if not counts:
        return {}
    top = max(counts.values())
    if target_share is not None:
        return {c: float(max(target_share * top / max(n, 1), 1.0)) for c, n in counts.items()}
    return {c: float(min(max(top / max(n, 1), 1.0), oversample_factor)) for c, n in counts.items()}
