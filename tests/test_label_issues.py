"""Label errors on synthetic clusters with known flips, and on a float16 memmap."""

from __future__ import annotations

import numpy as np

from thresher import knn
from thresher.clean import label_issues as li


def _clusters(n_per=150, classes=4, dim=32, noise=0.25, flip=0.12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    truth = np.repeat(np.arange(classes), n_per)
    x = centres[truth] + noise * rng.normal(size=(len(truth), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    given = truth.copy()
    flipped = rng.random(len(truth)) < flip
    given[flipped] = (truth[flipped] + rng.integers(1, classes, flipped.sum())) % classes
    return x.astype(np.float32), given, truth


def test_flipped_labels_are_found_and_the_true_label_suggested():
    x, given, truth = _clusters()
    r = li.label_errors(x, given, 4)
    wrong = given != truth
    tp = (r.is_issue & wrong).sum()
    assert tp >= 0.9 * wrong.sum()  # recall
    assert tp >= 0.9 * r.is_issue.sum()  # precision
    assert (r.suggested[r.is_issue & wrong] == truth[r.is_issue & wrong]).mean() >= 0.9
    assert (r.suggested[~r.is_issue] == -1).all() and (r.confidence[~r.is_issue] == 0).all()
    assert r.confidence[r.is_issue].min() > 0.3
    np.testing.assert_allclose(r.probs.sum(axis=1), 1.0, rtol=1e-4)


def test_each_view_leaves_the_image_itself_out():
    # Two identical points with different labels, and a third far away: a view that saw the
    # image's own label would call both "certain"; out-of-sample views must see the conflict.
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    labels = np.array([0, 1, 1, 1])
    knn = li.knn_probs(x, labels, 2, k=1)
    assert knn[0, 1] > 0.9  # its twin (label 1) is its nearest neighbour, not itself
    cen = li.centroid_probs(x, labels, 2)
    assert cen[0, 0] < 0.5  # class 0 without row 0 is empty: row 0 cannot look like it


def test_works_on_a_float16_memmap_in_small_batches(tmp_path, monkeypatch):
    x, given, truth = _clusters(n_per=60, classes=3, seed=2)
    mm = np.lib.format.open_memmap(tmp_path / "e.npy", mode="w+", dtype=np.float16, shape=x.shape)
    mm[:] = x
    monkeypatch.setattr(li, "_BATCH", 17)  # force many batches
    r = li.label_errors(np.load(tmp_path / "e.npy", mmap_mode="r"), given, 3)
    wrong = given != truth
    assert (r.is_issue & wrong).sum() >= 0.8 * wrong.sum()


def test_large_inputs_use_an_ivf_index_with_the_same_verdicts(monkeypatch):
    x, given, truth = _clusters(n_per=300, classes=4, seed=3)
    exact = li.knn_probs(x, given, 4)
    monkeypatch.setattr(knn, "EXACT_KNN_UP_TO", 100)  # take the approximate path
    approx = li.knn_probs(x, given, 4)
    assert (approx.argmax(axis=1) == exact.argmax(axis=1)).mean() > 0.97
