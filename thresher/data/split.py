"""A stratified train/validation split that never separates a duplicate group.

Copies of one picture in both splits would leak: the model is validated on what it trained on.
So the unit of the split is the group (a file outside any group is its own unit), each class
gets its share of validation units, and a unit's place comes from a hash of its key and the
seed: the same seed gives the same split, and adding files does not reshuffle the others.
"""

from __future__ import annotations

import numpy as np

from thresher.bits import splitmix64


def group_stratified_split(
    labels: np.ndarray, groups: np.ndarray, keys: np.ndarray, val_fraction: float, seed: int = 0
) -> np.ndarray:
    """Boolean mask of the validation rows.

    labels: class of each row; groups: group id of each row (-1 = none); keys: a stable integer
    per row (the catalog id). Per class, units are taken in hash order until the class's
    validation share is reached; a class keeps at least one unit for training.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups, dtype=np.int64)
    keys = np.asarray(keys, dtype=np.int64)
    n = len(labels)
    is_val = np.zeros(n, dtype=bool)
    if n == 0 or val_fraction <= 0:
        return is_val
    # Unit id: the group, or the row itself (as a negative number, never a group id).
    unit = np.where(groups >= 0, groups, -1 - np.arange(n))
    uniq, inverse = np.unique(unit, return_inverse=True)
    size = np.bincount(inverse)
    first = np.full(len(uniq), n, dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(n))
    unit_key = np.full(len(uniq), np.iinfo(np.int64).max)
    np.minimum.at(unit_key, inverse, keys)
    mixed = splitmix64(unit_key.astype(np.uint64) ^ splitmix64(np.uint64(seed & (2**64 - 1))))
    unit_label = labels[first]  # a group is filed under its first member's label
    unit_val = np.zeros(len(uniq), dtype=bool)
    for c in np.unique(unit_label):
        members = np.nonzero(unit_label == c)[0]
        if len(members) < 2:
            continue
        order = members[np.argsort(mixed[members], kind="stable")]
        target = val_fraction * size[members].sum()
        taken = np.cumsum(size[order]) - size[order]  # files already in val before this unit
        chosen = order[(taken < target) & (taken + size[order] / 2 <= target + 0.5)]
        unit_val[chosen[: len(members) - 1]] = True  # at least one unit stays in training
    is_val[:] = unit_val[inverse]
    return is_val
