"""The issue model: the kinds of issue, what export does with each by default, the typed rows.

A leaf (no thresher imports): clean writes these rows, catalog stores them, and review, export,
the report, demo and the CLI read them by name. One place for this knowledge.

Default actions follow each rule's measured precision on the real-image bench
(bench/clean_real.py, bench/RESULTS.md): a rule that is not sure sends a file to review or only
reports it, never drops it silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# Issue kind -> what export does with it by default. ExportPolicy.actions overrides per kind.
ACTIONS: dict[str, str] = {
    # Scan statuses: the file cannot be used at all.
    "corrupt": "drop",
    "empty": "drop",
    "not_image": "drop",
    "oversized": "drop",
    "unreadable": "drop",
    "broken_symlink": "drop",
    # Exact by definition (the short side as stored).
    "low_resolution": "drop",
    # Measured on the real bench; see bench/RESULTS.md "clean on real images".
    "upscaled": "drop",
    "blank": "drop",
    "exact_duplicate": "keep one",
    # Copies made from the kept one (re-encoded, resized, cropped, watermarked): on the real
    # bench every one of them is a real copy.
    "near_duplicate": "keep one",
    # A copy edited by someone (lossless, same size, other pixels: clean/duplicates.py
    # edits_of_kept): expression variants of emoji faces, revisions of one drawing, a sign
    # re-used with another symbol; the hashes and embeddings see one picture. A person decides.
    # Export keeps a group on one side of the split either way.
    "near_duplicate_edit": "review",
    # A person decides (first in the review queue): on real clip art the flags are right about
    # a third of the time (classes the backbone finds close), and dropping them all threw away
    # more good files than bad. The suggested label is the detector's second guess.
    "label_error": "review",
    "label_conflict": "review",
    "doubtful_label": "review",
}

# How sure each rule is: the precision of the files it flags on the real-image bench
# (bench/clean_real.py; copies: a real copy of the kept one). `thresher clean` prints it beside
# each issue. Scan statuses and low resolution are exact by definition.
BENCH_PRECISION: dict[str, float] = {
    "low_resolution": 1.0,
    "upscaled": 0.97,
    "blank": 1.0,
    "exact_duplicate": 1.0,
    "near_duplicate": 1.0,
    "near_duplicate_edit": 0.14,
    "label_error": 0.28,
}

# Kinds whose `grp` is a duplicate group (label_conflict reuses the group of its copies):
# export keeps a group on one side of the split, review shows the group as evidence.
GROUP_KINDS = ("exact_duplicate", "near_duplicate", "near_duplicate_edit", "label_conflict")
DUPLICATE_KINDS = ("exact_duplicate", "near_duplicate", "near_duplicate_edit")


class IssueRecord(NamedTuple):
    """One stored issue row, as clean writes it (the `issues` table's columns, in order)."""

    image_id: int
    issue: str
    confidence: float
    grp: int | None
    keep: int
    suggested_label: str | None
    review: int  # place in the review queue, 1 = first; 0 = not queued
    reason: str | None


class IssueRow(NamedTuple):
    """One issue of one file, joined with the file and a person's decision (Catalog.issues)."""

    path: str
    label: str | None
    issue: str
    confidence: float
    grp: int | None
    keep: int
    suggested_label: str | None
    review: int
    reason: str | None
    image_id: int
    decision: str | None
    decided_label: str | None


@dataclass(frozen=True)
class Found:
    """What one detector found, in the one shape every detector returns.

    `rows` are row indices into the catalog columns; the other arrays align with `rows`
    (None where the detector has nothing to say). `confidence` is 0-1, higher = surer.
    """

    kind: str
    rows: np.ndarray
    confidence: np.ndarray
    group: np.ndarray | None = None
    keep: np.ndarray | None = None
    suggestion: np.ndarray | None = None
    reason: np.ndarray | None = None

    @classmethod
    def where(cls, kind: str, mask: np.ndarray, confidence: np.ndarray, **per_row) -> Found:
        """The rows where `mask` holds, every full-length array cut down to them."""
        rows = np.nonzero(np.asarray(mask, bool))[0]
        cut = {k: None if v is None else np.asarray(v)[rows] for k, v in per_row.items()}
        return cls(kind, rows, np.asarray(confidence)[rows], **cut)


def removes(kind: str, keep: bool, actions: dict[str, str] = ACTIONS) -> bool:
    """Whether export's action for this kind takes the file out of the dataset."""
    action = actions[kind]
    return action == "drop" or (action == "keep one" and not keep)


def default_fate(issues, actions: dict[str, str] = ACTIONS) -> str | None:
    """The issue kind whose default action takes a file out of the export, None if none does.

    `issues` is the file's (kind, keep) pairs. What export does to a file nobody decided; the
    review page says it ("if you do nothing: dropped as upscaled"). A plain drop names itself
    before a "keep one" copy.
    """
    order = {k: i for i, k in enumerate(actions)}
    out = [(actions[k] != "drop", order.get(k, len(order)), k) for k, keep in issues]
    gone = [k for _, _, k in sorted(out) if removes(k, bool(dict(issues).get(k)), actions)]
    return gone[0] if gone else None
