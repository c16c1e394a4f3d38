"""The review queue's order and size; class counts, imbalance ratio and the balancing plan."""

from __future__ import annotations

import numpy as np

from thresher.clean import imbalance
from thresher.clean.review_queue import label_doubt, review_queue, threshold_doubt


def test_weakest_flags_come_first_then_nearest_misses():
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.05, 0.95], [0.6, 0.4], [0.2, 0.8]])
    labels = np.array([0, 0, 0, 0, 0])
    flagged = np.array([False, True, True, False, False])
    d = label_doubt(probs, labels, flagged)
    order = review_queue(d, n_files=5, fraction=1.0).tolist()
    # flags: row 1 (given 0.4) is weaker than row 2 (0.05); then misses: 4 (0.2), 3, 0
    assert order == [1, 2, 4, 3, 0]


def test_queue_size_is_the_fraction_of_all_files_and_skips_zero_doubt():
    d = np.array([0.0, 0.3, 0.9, 0.0, 0.5])
    assert review_queue(d, n_files=100, fraction=0.03).tolist() == [2, 4, 1]
    assert review_queue(d, n_files=100, fraction=0.01).tolist() == [2]


def test_threshold_doubt_peaks_at_the_cut():
    d = threshold_doubt(np.array([0.5, 0.95, 0.6, 0.5]), np.array([True, True, True, False]))
    assert d[0] == 1.0 and d[1] < d[2] < d[0] and d[3] == 0.0


def test_counts_ratio_and_plan():
    labels = np.array(["dog"] * 50 + ["cat"] * 20 + ["koala"] * 1 + [None], dtype=object)
    counts = imbalance.class_counts(labels)
    assert list(counts) == ["dog", "cat", "koala"] and counts["koala"] == 1
    assert imbalance.imbalance_ratio(counts) == 50
    plan = imbalance.balancing_plan(counts, oversample_factor=3.0)
    assert plan == {"dog": 1.0, "cat": 2.5, "koala": 3.0}
    share = imbalance.balancing_plan(counts, target_share=0.5)
    assert share == {"dog": 1.0, "cat": 1.25, "koala": 25.0}  # up to half the largest, uncapped
