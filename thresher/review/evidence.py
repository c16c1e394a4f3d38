"""What a reviewer sees beside a suspect: its nearest neighbours and the labels to offer.

Pure functions over arrays; the server (server.py) feeds them catalog columns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

_CHUNK = 65_536  # rows per product: bounds memory whatever the catalog size


def nearest(
    matrix, ids: np.ndarray, query: np.ndarray, k: int, exclude: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The k ids whose rows of `matrix` (L2-normalised, row = id) are most similar to `query`.

    Returns (ids, cosine similarities), most similar first. Brute force in chunks straight
    from the memmap: one suspect at a time needs no index, and nothing is held in memory.
    """
    q = np.asarray(query, dtype=np.float32)
    best_ids = np.empty(0, dtype=np.int64)
    best_sim = np.empty(0, dtype=np.float32)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        sim = np.asarray(matrix[chunk], dtype=np.float32) @ q
        if exclude is not None:
            sim[chunk == exclude] = -np.inf
        top = np.argpartition(-sim, min(k, len(sim) - 1))[:k] if len(sim) > k else slice(None)
        best_ids = np.concatenate([best_ids, chunk[top]])
        best_sim = np.concatenate([best_sim, sim[top]])
    order = np.argsort(-best_sim, kind="stable")[:k]
    keep = np.isfinite(best_sim[order])
    return best_ids[order][keep], best_sim[order][keep]


def neighbours(
    index, matrix, ids: np.ndarray, image_id: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest neighbours of image `image_id` among `ids`: (ids, similarities).

    `index` is a FAISS index over the rows of `ids` (thresher.knn.knn_index); while it
    is None (still being built), the search is brute force over the memmap.
    """
    query = np.asarray(matrix[image_id], dtype=np.float32)
    if index is None:
        return nearest(matrix, ids, query, k, exclude=image_id)
    sims, pos = index.search(query[None], k + 1)
    sims, pos = sims[0], pos[0]
    keep = pos >= 0  # IVF returns -1 where its probed lists ran short
    found = ids[pos[keep]]
    sims = sims[keep]
    other = found != image_id
    return found[other][:k], sims[other][:k]


def label_choices(
    current: str | None,
    suggested: Sequence[str | None],
    neighbour_labels: Sequence[str | None],
    class_counts: dict[str, int],
    limit: int = 9,
) -> list[str]:
    """The labels keys 1-9 offer, most likely first: clean's suggestions, then the labels of
    the nearest neighbours by votes, then the largest classes. Never the current label."""
    out: list[str] = []

    def add(label) -> None:
        if label and label != current and label not in out and len(out) < limit:
            out.append(str(label))

    for s in suggested:
        add(s)
    for label, _ in Counter(x for x in neighbour_labels if x).most_common():
        add(label)
    for label, _ in sorted(class_counts.items(), key=lambda kv: (-kv[1], kv[0])):
        add(label)
    return out
