"""Label errors: images whose visual neighbours and class clusters say they belong elsewhere.

Three views of "which class does this embedding look like", each an (N, C) probability matrix,
none of which has seen the image's own label:
- out-of-fold logistic regression on the embeddings (a linear probe, K folds);
- k-nearest-neighbour vote (FAISS inner product, the image itself left out);
- class centroids (cosine to each class mean, the image left out of its own class's mean).
Their average goes to cleanlab's confident learning (`find_label_issues`), which decides how
many labels to doubt per class from the estimated noise; the score of a flagged image is
1 - p(given label), and the suggested label is the most probable other class.

Memory is bounded for millions of rows: embeddings are read in batches (a memmap is fine), the
probe trains on at most `max_train` rows per fold, and FAISS searches in batches (an IVF index
above thresher.knn.EXACT_KNN_UP_TO rows; bench/label_errors_1m.py measures 1,000,000).

When it is wrong: classes the backbone cannot tell apart (two dog breeds for an ImageNet
model trained without them) look like label noise between them; and a class that is mostly
mislabelled teaches the probe the wrong concept (confident learning assumes most labels are right).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thresher.knn import float32_rows, knn_index

_BATCH = 16384


@dataclass(frozen=True)
class LabelResult:
    """Per row: `is_issue`, `confidence` (0-1) and `suggested` (class index; -1 = none)."""

    is_issue: np.ndarray
    confidence: np.ndarray
    suggested: np.ndarray
    probs: np.ndarray  # (N, C) averaged out-of-sample class probabilities


def probe_probs(
    embeddings: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    folds: int = 5,
    max_train: int = 50_000,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Out-of-fold class probabilities from a logistic-regression probe on the embeddings.

    `groups` (-1 = none): copies of one picture share a fold, so a copy's label is never
    taught to the probe that judges its twin.
    """
    from sklearn.linear_model import LogisticRegression

    n = len(labels)
    rng = np.random.default_rng(seed)
    fold = rng.permutation(n) % folds
    if groups is not None:
        g = np.asarray(groups)
        member = np.nonzero(g >= 0)[0]
        if len(member):
            ids, first = np.unique(g[member], return_index=True)
            fold[member] = fold[member[first]][np.searchsorted(ids, g[member])]
    out = np.zeros((n, n_classes), dtype=np.float32)
    for f in range(folds):
        train = np.nonzero(fold != f)[0]
        if len(train) > max_train:
            train = np.sort(rng.choice(train, max_train, replace=False))
        model = LogisticRegression(max_iter=1000, C=1.0)
        model.fit(float32_rows(embeddings, train), labels[train])
        test = np.nonzero(fold == f)[0]
        for s in range(0, len(test), _BATCH):
            t = test[s : s + _BATCH]
            out[np.ix_(t, model.classes_)] = model.predict_proba(float32_rows(embeddings, t))
    return out


def knn_probs(
    embeddings: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    k: int = 10,
    seed: int = 0,
    groups: np.ndarray | None = None,
):
    """Similarity-weighted vote of each row's k nearest neighbours (itself excluded).

    `groups` (-1 = none): copies of the row's own picture do not vote (they carry the same
    label, right or wrong, and would outvote the other pictures); k more are searched for them.
    """
    n = len(labels)
    index = knn_index(embeddings, seed)
    g = None if groups is None else np.asarray(groups)
    extra = 0
    if g is not None and (g >= 0).any():
        extra = int(np.bincount(g[g >= 0]).max()) - 1
    kk = min(k + 1 + extra, n)
    out = np.zeros((n, n_classes), dtype=np.float32)
    for s in range(0, n, _BATCH):
        q = np.arange(s, min(n, s + _BATCH))
        sims, ids = index.search(float32_rows(embeddings, q), kk)
        # Leave the image out; IVF may return -1 where a list ran short.
        w = np.where((ids == q[:, None]) | (ids < 0), 0.0, np.maximum(sims, 0.0))
        if g is not None:
            gn = g[np.maximum(ids, 0)]
            w = np.where((gn >= 0) & (gn == g[q][:, None]), 0.0, w)
            # Only the k nearest of the other pictures vote.
            w = np.where(np.cumsum(w > 0, axis=1) <= k, w, 0.0)
        np.add.at(out, (np.repeat(q, kk), labels[np.maximum(ids, 0).ravel()]), w.ravel())
    out += 1e-3  # a little prior: no row is certain from ten neighbours
    return out / out.sum(axis=1, keepdims=True)


def centroid_probs(
    embeddings: np.ndarray, labels: np.ndarray, n_classes: int, temperature: float = 0.05
):
    """Softmax of cosine to each class centroid, each row left out of its own class's mean."""
    n, dim = embeddings.shape
    sums = np.zeros((n_classes, dim), dtype=np.float64)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    for s in range(0, n, _BATCH):
        idx = np.arange(s, min(n, s + _BATCH))
        np.add.at(sums, labels[idx], float32_rows(embeddings, idx))
    # Cosine to a mean is cosine to a sum, so one matrix product per batch does every class;
    # the own class is then corrected to the sum without the row itself.
    sum_sq = np.einsum("cd,cd->c", sums, sums)
    sum_norm = np.sqrt(sum_sq)
    out = np.zeros((n, n_classes), dtype=np.float32)
    for s in range(0, n, _BATCH):
        idx = np.arange(s, min(n, s + _BATCH))
        x = float32_rows(embeddings, idx).astype(np.float64)
        dots = x @ sums.T
        sims = np.where(sum_norm > 0, dots / np.maximum(sum_norm, 1e-12), -1.0)
        y = labels[idx]
        rows = np.arange(len(idx))
        own_dot = dots[rows, y]
        xx = np.einsum("nd,nd->n", x, x)
        rest_norm = np.sqrt(np.maximum(sum_sq[y] - 2 * own_dot + xx, 0.0))
        alone = (counts[y] <= 1) | (rest_norm < 1e-9)  # nothing else in its class
        sims[rows, y] = np.where(alone, -1.0, (own_dot - xx) / np.maximum(rest_norm, 1e-12))
        z = (sims - sims.max(axis=1, keepdims=True)) / temperature
        e = np.exp(z)
        out[idx] = e / e.sum(axis=1, keepdims=True)
    return out


def find_label_errors(
    labels: np.ndarray, probs: list[np.ndarray], filter_by: str = "prune_by_noise_rate"
) -> LabelResult:
    """Confident learning on the averaged probabilities of the given views."""
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels, dtype=np.int64)
    p = np.mean(probs, axis=0)
    p = p / p.sum(axis=1, keepdims=True)
    # Noise-rate pruning by default: bench/clean_quality.py compares it with "both" (also the
    # per-class confident thresholds) on the demo crawl and Fashion-MNIST.
    flagged = find_label_issues(labels, p, filter_by=filter_by, n_jobs=1)
    given = p[np.arange(len(labels)), labels]
    others = p.copy()
    others[np.arange(len(labels)), labels] = -1
    suggested = np.where(flagged, others.argmax(axis=1), -1)
    confidence = np.where(flagged, 1.0 - given, 0.0).astype(np.float32)
    return LabelResult(flagged, confidence, suggested, p.astype(np.float32))


def label_errors(
    embeddings: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    k: int = 10,
    seed: int = 0,
    filter_by: str = "prune_by_noise_rate",
    groups: np.ndarray | None = None,
) -> LabelResult:
    """The three views above, combined: what `thresher clean` runs.

    `groups`: duplicate group per row (-1 = none); copies of one picture do not vouch for
    each other's label.
    """
    views = [
        probe_probs(embeddings, labels, n_classes, seed=seed, groups=groups),
        knn_probs(embeddings, labels, n_classes, k=k, groups=groups),
        centroid_probs(embeddings, labels, n_classes),
    ]
    return find_label_errors(labels, views, filter_by)
