"""`thresher clean`: run every detector over the catalog and store one issue table.

The detectors are pure (duplicates, quality_rules, label_issues, imbalance, review_queue);
this module is the edge that reads catalog columns, calls them, and writes the result back
through catalog.py in one transaction. One row per (file, issue), the shape of
`thresher issues`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from thresher.catalog import Catalog, EmbeddingRows
from thresher.clean import duplicates as dup
from thresher.clean import imbalance, quality_rules, review_queue
from thresher.config import DEFAULT_WORKSPACE, CleanThresholds

# Issue kind -> what export does with it. Kinds beyond the scan statuses are documented in
# the README's issue table.
ACTIONS = {
    "corrupt": "drop",
    "empty": "drop",
    "not_image": "drop",
    "oversized": "drop",
    "unreadable": "drop",
    "broken_symlink": "drop",
    "low_resolution": "drop",
    "upscaled": "drop",
    "blank": "drop",
    "exact_duplicate": "keep one",
    "near_duplicate": "keep one",
    # Dropped, not relabelled, unless the policy or a reviewer says so: the suggested label is
    # the detector's second guess, and a wrong relabel teaches the wrong class.
    "label_error": "drop",
    "label_conflict": "review",
    "doubtful_label": "review",
}


# Issue kinds whose `grp` is a duplicate group (label_conflict reuses the group of its copies):
# export keeps a group on one side of the split, review shows the group as evidence.
GROUP_KINDS = ("exact_duplicate", "near_duplicate", "label_conflict")


@dataclass
class CleanSummary:
    """What clean found: per issue kind the files and their share, and the class balance."""

    files: int = 0
    flagged: int = 0  # files with at least one issue that removes or changes them
    by_issue: dict[str, int] = field(default_factory=dict)
    review: int = 0
    duplicate_groups: int = 0
    counts_before: dict[str, int] = field(default_factory=dict)
    counts_after: dict[str, int] = field(default_factory=dict)
    imbalance_before: float = 1.0
    imbalance_after: float = 1.0
    plan: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def flagged_share(self) -> float:
        return self.flagged / self.files if self.files else 0.0


def clean(
    workspace: Path | str = DEFAULT_WORKSPACE, thresholds: CleanThresholds | None = None, log=print
) -> CleanSummary:
    """Find every issue in the workspace's catalog and store the issue table; return a summary."""
    th = thresholds or CleanThresholds()
    with Catalog(workspace, create=False) as cat:
        c, mm = detector_inputs(cat)
        rows, summary = find_issues(c, mm, th, log)
        cat.replace_issues(rows, asdict(summary))
    return summary


DETECTOR_COLUMNS = (
    "id",
    "path",
    "label",
    "status",
    "checksum",
    "pixel_checksum",
    "width",
    "height",
    "size_bytes",
    "phash",
    "dhash",
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "dominant_share",
    "effective_short_side",
    "has_embedding",
)


def detector_inputs(cat: Catalog) -> tuple[dict, np.ndarray | None]:
    """The catalog columns every detector reads (aliases and vanished files left out), and
    the embeddings memmap (None if the scan made none)."""
    c = cat.columns(list(DETECTOR_COLUMNS), where="status NOT IN ('alias', 'missing')")
    return c, cat.embeddings()


def find_issues(c: dict, mm, th: CleanThresholds, log=print) -> tuple[list[tuple], CleanSummary]:
    """Every detector over the catalog columns `c`; returns (issue rows, summary)."""
    n = len(c["id"])
    s = CleanSummary(files=n)
    ok = c["status"] == "ok"
    issues: dict[str, dict] = {}  # kind -> {row: (confidence, group, keep, suggested, reason)}

    def add(kind, rows, conf, group=None, keep=None, suggested=None, reason=None):
        d = issues.setdefault(kind, {})
        for k, r in enumerate(rows.tolist()):
            d[r] = (
                float(conf[k]),
                None if group is None else int(group[k]),
                bool(keep[k]) if keep is not None else False,
                None if suggested is None else suggested[k],
                None if reason is None else reason[k],
            )

    for kind, r in quality_rules.unusable(c["status"]).items():
        rows = np.nonzero(r.is_issue)[0]
        add(kind, rows, r.confidence[rows], reason=r.reason[rows])
    std = np.stack([c["std_r"], c["std_g"], c["std_b"]], axis=1)
    rules = {
        "low_resolution": quality_rules.low_resolution(c["width"], c["height"], ok, th),
        "upscaled": quality_rules.upscaled(
            c["width"], c["height"], c["effective_short_side"], ok, th
        ),
        "blank": quality_rules.blank(std, c["dominant_share"], ok, th),
    }
    for kind, r in rules.items():
        rows = np.nonzero(r.is_issue)[0]
        add(kind, rows, r.confidence[rows], reason=r.reason[rows])

    has_emb = mm is not None and bool((c["has_embedding"][ok] == 1).all()) and ok.any()
    emb = EmbeddingRows(mm, c["id"]) if has_emb else None
    if not has_emb:
        s.notes.append(
            "no embeddings for every image: near-duplicates by hash only, no "
            "label-error check (scan with --weights to get them)"
        )

    # Duplicates among decoded, non-blank images.
    eligible = ok & ~rules["blank"].is_issue
    signals = dup.Signals(
        c["phash"],
        c["dhash"],
        np.stack([c["mean_r"], c["mean_g"], c["mean_b"]], axis=1),
        emb,
        max_phash=th.near_duplicate_max_hamming,
        max_dhash=th.near_duplicate_max_dhash,
        max_colour_shift=th.near_duplicate_max_colour_shift,
        min_cosine=th.near_duplicate_min_cosine,
    )
    w, h = c["width"], c["height"]
    bpp = np.divide(
        np.nan_to_num(c["size_bytes"]),
        np.nan_to_num(w * h),
        out=np.zeros(n),
        where=np.nan_to_num(w * h) > 0,
    )
    # Same decoded pixels (byte copies included); the byte checksum where the pixels were not
    # checksummed (a catalog scanned before schema version 2).
    has_pixels = np.array([x is not None for x in c["pixel_checksum"]], dtype=bool)
    exact_key = np.where(has_pixels, c["pixel_checksum"], c["checksum"])
    d = dup.find_duplicates(
        exact_key, signals, dup.real_pixels(w, h, c["effective_short_side"]), bpp, eligible
    )
    in_group = np.nonzero(d.group >= 0)[0]
    s.duplicate_groups = len(np.unique(d.group[in_group]))
    for kind, mask in (("exact_duplicate", d.exact), ("near_duplicate", ~d.exact)):
        rows = in_group[mask[in_group]]
        add(
            kind,
            rows,
            d.confidence[rows],
            group=d.group[rows],
            keep=d.keep[rows],
            reason=np.array(
                ["kept copy" if k else "copy of the kept one" for k in d.keep[rows]], dtype=object
            ),
        )
    # Copies filed under different labels: the labels conflict, a person should decide.
    labels = c["label"]
    label_str = np.array(["" if x is None else str(x) for x in labels], dtype=object)
    order = in_group[np.argsort(d.group[in_group], kind="stable")]
    for m in np.split(order, np.flatnonzero(np.diff(d.group[order])) + 1):
        names = sorted(set(label_str[m]) - {""})
        if len(names) > 1:
            kept = m[d.keep[m]][0]
            add(
                "label_conflict",
                m,
                np.full(len(m), 0.5),
                group=d.group[m],
                suggested=np.full(len(m), labels[kept], dtype=object),
                reason=np.full(len(m), f"copies labelled {', '.join(names)}", dtype=object),
            )

    doubt = np.zeros(n)
    labelled = eligible & np.array([x is not None for x in labels])
    classes = sorted({str(x) for x in labels[labelled]})
    if has_emb and len(classes) >= 2:
        from thresher.clean.label_issues import label_errors

        rows = np.nonzero(labelled)[0]
        y = np.searchsorted(classes, labels[rows].astype(str))
        sub = EmbeddingRows(mm, c["id"][rows])
        le = label_errors(sub, y, len(classes), k=th.label_error_neighbours)
        flagged = rows[le.is_issue]
        sugg = np.array([classes[i] for i in le.suggested[le.is_issue]], dtype=object)
        add(
            "label_error",
            flagged,
            le.confidence[le.is_issue],
            suggested=sugg,
            reason=np.array([f"looks like {x}" for x in sugg], dtype=object),
        )
        doubt[rows] = review_queue.label_doubt(le.probs, y, le.is_issue)
        top_other = le.probs.copy()
        top_other[np.arange(len(y)), y] = -1
        best = np.array([classes[i] for i in top_other.argmax(axis=1)], dtype=object)
    elif len(classes) >= 2:
        s.notes.append("label errors need embeddings: not checked")
    # Borderline rule decisions compete for the queue too, on the same 0-1 doubt scale.
    copies = (d.group >= 0) & ~d.keep & ~d.exact  # the kept copy and byte twins need no decision
    for flagged_rows_, conf in (
        (copies, d.confidence),
        (rules["upscaled"].is_issue, rules["upscaled"].confidence),
        (rules["blank"].is_issue, rules["blank"].confidence),
    ):
        doubt = np.maximum(doubt, review_queue.threshold_doubt(conf, flagged_rows_))
    queue = review_queue.review_queue(doubt, n, th.review_fraction)
    in_queue = np.zeros(n, dtype=np.int64)  # place in the queue, 1 = first; 0 = not queued
    in_queue[queue] = np.arange(1, len(queue) + 1)
    flagged_rows = {r for d_ in issues.values() for r in d_}
    if has_emb and len(classes) >= 2:
        extra = np.array([r for r in queue if r not in flagged_rows], dtype=np.int64)
        if len(extra):
            pos = np.searchsorted(rows, extra)
            add(
                "doubtful_label",
                extra,
                doubt[extra],
                suggested=best[pos],
                reason=np.array(["the views are split about its label"] * len(extra), dtype=object),
            )
    s.review = int((in_queue > 0).sum())

    out = []
    removed = np.zeros(n, dtype=bool)
    for kind, d_ in issues.items():
        count = (
            len(d_)
            if kind not in ("exact_duplicate", "near_duplicate")
            else sum(1 for v in d_.values() if not v[2])
        )
        if count:
            s.by_issue[kind] = count
        for r, (conf, group, keep, sugg, reason) in d_.items():
            out.append(
                (
                    int(c["id"][r]),
                    kind,
                    conf,
                    group,
                    int(keep),
                    None if sugg is None else str(sugg),
                    int(in_queue[r]),
                    reason,
                )
            )
            if ACTIONS[kind] == "drop" or (ACTIONS[kind] == "keep one" and not keep):
                removed[r] = True
    changed = {r for k, d_ in issues.items() if ACTIONS[k] in ("relabel",) for r in d_}
    s.flagged = int(removed.sum() + len(changed - set(np.nonzero(removed)[0].tolist())))
    s.counts_before = imbalance.class_counts(labels)
    s.counts_after = imbalance.class_counts(labels[~removed & (c["status"] == "ok")])
    s.imbalance_before = imbalance.imbalance_ratio(s.counts_before)
    s.imbalance_after = imbalance.imbalance_ratio(s.counts_after)
    s.plan = imbalance.balancing_plan(s.counts_after, th.oversample_factor)
    for note in s.notes:
        log(note)
    return out, s
