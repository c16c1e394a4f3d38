"""`thresher clean`: run every detector over the catalog and store one issue table.

The detectors are pure (duplicates, quality_rules, label_issues, imbalance, review_queue);
this module is the edge that reads catalog columns, calls them, and writes the result back
through catalog.py in one transaction. One row per (file, issue), the shape of
`thresher issues`.

Each `detect_*` function takes the shared `Inputs` and returns a list of `Found` (the one
result shape of issue_model.py); `find_issues` loops over DETECTORS in order (a later one may
read what an earlier one left on `Inputs`, as cleanlab's issue managers share one state), then
ranks the review queue and turns everything into IssueRecord rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from thresher.catalog import Catalog, EmbeddingRows
from thresher.clean import duplicates as dup
from thresher.clean import imbalance, quality_rules, review_queue
from thresher.config import DEFAULT_WORKSPACE, CleanThresholds
from thresher.issue_model import ACTIONS, DUPLICATE_KINDS, GROUP_KINDS, Found, IssueRecord, removes

# The issue model lives in its own leaf; re-exported here for callers of clean's API.
__all__ = ["ACTIONS", "GROUP_KINDS", "CleanSummary", "clean", "find_issues"]


@dataclass
class CleanSummary:
    """What clean found: per issue kind the files and their share, and the class balance."""

    files: int = 0
    flagged: int = 0  # files with at least one issue that removes or changes them
    by_issue: dict[str, int] = field(default_factory=dict)
    confidence: dict[str, float] = field(default_factory=dict)  # kind -> mean of its rows
    review: int = 0
    duplicate_groups: int = 0
    # Per duplicate kind, the kept copies: by_issue counts the copies only (what leaves the
    # data), while the issue table has a row for every member, the kept copy included.
    kept: dict[str, int] = field(default_factory=dict)
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
    workspace: Path | str = DEFAULT_WORKSPACE,
    thresholds: CleanThresholds | None = None,
    log=print,
    progress: DetectorProgress | None = None,
) -> CleanSummary:
    """Find every issue in the workspace's catalog and store the issue table; return a summary.

    `progress(done, total, name)` is called as each detector starts (see `find_issues`).
    """
    th = thresholds or CleanThresholds()
    with Catalog(workspace, create=False) as cat:
        c, mm = detector_inputs(cat)
        rows, summary = find_issues(c, mm, th, log, progress)
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
    "format",
    "phash",
    "dhash",
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "effective_short_side",
    "has_embedding",
)


def detector_inputs(cat: Catalog) -> tuple[dict, np.ndarray | None]:
    """The catalog columns every detector reads (aliases and vanished files left out), and
    the embeddings memmap (None if the scan made none)."""
    c = cat.columns(list(DETECTOR_COLUMNS), where="status NOT IN ('alias', 'missing')")
    return c, cat.embeddings()


@dataclass
class Inputs:
    """What every detector reads: the catalog columns and what is derived from them once."""

    c: dict
    th: CleanThresholds
    ok: np.ndarray  # decoded by the scan
    embeddings: EmbeddingRows | None  # every ok row has one, or None
    mm: object = None  # the embeddings memmap (row = image id)
    notes: list[str] = field(default_factory=list)
    # Filled by the detectors that run first, read by later ones (flat, in DETECTORS order).
    blank: np.ndarray | None = None
    duplicates: dup.DuplicateResult | None = None
    label_probs: tuple | None = None  # (labelled rows, class names, given y, LabelResult)

    @property
    def n(self) -> int:
        return len(self.c["id"])

    @property
    def labels(self) -> np.ndarray:
        return self.c["label"]


def detect_unusable(x: Inputs) -> list[Found]:
    """Files the scan could not use (corrupt, empty, not an image, ...)."""
    return [
        Found.where(kind, r.is_issue, r.confidence, reason=r.reason)
        for kind, r in quality_rules.unusable(x.c["status"]).items()
    ]


def detect_quality(x: Inputs) -> list[Found]:
    """Low resolution, upscaled fakes and blank images from the scan's measurements."""
    c, th = x.c, x.th
    std = np.stack([c["std_r"], c["std_g"], c["std_b"]], axis=1)
    rules = {
        "low_resolution": quality_rules.low_resolution(c["width"], c["height"], x.ok, th),
        "upscaled": quality_rules.upscaled(
            c["width"], c["height"], c["effective_short_side"], x.ok, th
        ),
        "blank": quality_rules.blank(std, x.ok, th),
    }
    x.blank = rules["blank"].is_issue
    return [Found.where(k, r.is_issue, r.confidence, reason=r.reason) for k, r in rules.items()]


def detect_duplicates(x: Inputs) -> list[Found]:
    """Exact and near-duplicate groups with the copy to keep; copies filed under two labels."""
    c, th, n = x.c, x.th, x.n
    # Blank images all hash alike: they stay out. Images on plain backgrounds take part.
    eligible = x.ok & ~x.blank
    signals = dup.Signals(
        c["phash"],
        c["dhash"],
        np.stack([c["mean_r"], c["mean_g"], c["mean_b"]], axis=1),
        x.embeddings,
        max_phash=th.near_duplicate_max_hamming,
        max_dhash=th.near_duplicate_max_dhash,
        max_colour_shift=th.near_duplicate_max_colour_shift,
        min_cosine=th.near_duplicate_min_cosine,
        std_rgb=np.stack([c["std_r"], c["std_g"], c["std_b"]], axis=1),
        max_chroma_shift=th.near_duplicate_max_chroma_shift,
        max_spread_shift=th.near_duplicate_max_spread_shift,
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
    has_pixels = np.array([v is not None for v in c["pixel_checksum"]], dtype=bool)
    exact_key = np.where(has_pixels, c["pixel_checksum"], c["checksum"])
    real_px = dup.real_pixels(w, h, c["effective_short_side"], th.upscaled_min_factor)
    lossless = np.isin(c["format"].astype(str), dup.LOSSLESS_FORMATS)
    # Among equal copies the first path in sorted order is kept: the same file whatever
    # order the scan's workers committed the rows in.
    path_rank = np.argsort(np.argsort(c["path"].astype(str), kind="stable"), kind="stable")
    d = dup.find_duplicates(exact_key, signals, real_px, bpp, eligible, lossless, path_rank)
    x.duplicates = d
    in_group = d.group >= 0
    # Copies edited by someone (lossless, same size, other pixels) are often other pictures:
    # only those go to a person; the rest are copies made from the kept one.
    edit = dup.edits_of_kept(d, lossless, w, h)
    reason = np.where(d.keep, "kept copy", "copy of the kept one").astype(object)
    reason[d.exact & ~d.keep] = "same pixels as the kept copy"
    reason[edit] = "an edit of the kept copy (same size, other pixels): a variant or a copy?"
    out = [
        Found.where(kind, in_group & mask, d.confidence, group=d.group, keep=d.keep, reason=reason)
        for kind, mask in (
            ("exact_duplicate", d.exact),
            ("near_duplicate", ~d.exact & ~edit),
            ("near_duplicate_edit", edit),
        )
    ]
    # Copies filed under different labels: the labels conflict, a person should decide.
    labels = x.labels
    label_str = np.array(["" if v is None else str(v) for v in labels], dtype=object)
    rows = np.nonzero(in_group)[0]
    order = rows[np.argsort(d.group[rows], kind="stable")]
    conflict = np.zeros(n, dtype=bool)
    suggestion = np.full(n, None, dtype=object)
    why = np.full(n, None, dtype=object)
    for m in np.split(order, np.flatnonzero(np.diff(d.group[order])) + 1) if len(order) else []:
        names = sorted(set(label_str[m]) - {""})
        if len(names) > 1:
            conflict[m] = True
            suggestion[m] = labels[m[d.keep[m]][0]]
            why[m] = f"copies labelled {', '.join(names)}"
    out.append(
        Found.where(
            "label_conflict",
            conflict,
            np.full(n, 0.5),
            group=d.group,
            suggestion=suggestion,
            reason=why,
        )
    )
    return out


def detect_label_errors(x: Inputs) -> list[Found]:
    """Labels the embeddings' neighbours, probe and class centroids disagree with."""
    labels = x.labels
    labelled = x.ok & ~x.blank & np.array([v is not None for v in labels])
    classes = sorted({str(v) for v in labels[labelled]})
    if len(classes) < 2:
        return []
    if x.embeddings is None:
        x.notes.append("label errors need embeddings: not checked")
        return []
    from thresher.clean.label_issues import label_errors

    rows = np.nonzero(labelled)[0]
    y = np.searchsorted(classes, labels[rows].astype(str))
    sub = EmbeddingRows(x.mm, x.c["id"][rows])
    # Copies of one picture carry one label: they must not vouch for each other.
    groups = None if x.duplicates is None else x.duplicates.group[rows]
    le = label_errors(sub, y, len(classes), k=x.th.label_error_neighbours, groups=groups)
    x.label_probs = (rows, classes, y, le)
    flagged = np.zeros(x.n, dtype=bool)
    flagged[rows[le.is_issue]] = True
    conf = np.zeros(x.n, dtype=np.float32)
    conf[rows] = le.confidence
    sugg = np.full(x.n, None, dtype=object)
    sugg[rows[le.is_issue]] = [classes[i] for i in le.suggested[le.is_issue]]
    reason = np.array([None if s is None else f"looks like {s}" for s in sugg], dtype=object)
    return [Found.where("label_error", flagged, conf, suggestion=sugg, reason=reason)]


# The detectors, in order: later ones read what earlier ones left on `Inputs`.
DETECTORS: tuple[Callable[[Inputs], list[Found]], ...] = (
    detect_unusable,
    detect_quality,
    detect_duplicates,
    detect_label_errors,
)

# progress(done, total, name): `done` detectors finished, `name` the one starting now.
DetectorProgress = Callable[[int, int, str], None]


def detector_name(detect: Callable) -> str:
    """'label errors' for detect_label_errors: what a progress bar shows."""
    return detect.__name__.removeprefix("detect_").replace("_", " ")


def find_issues(
    c: dict, mm, th: CleanThresholds, log=print, progress: DetectorProgress | None = None
) -> tuple[list[IssueRecord], CleanSummary]:
    """Every detector over the catalog columns `c`; returns (issue rows, summary).

    `progress(done, total, name)`, if given, is called once per detector, in order, as it
    starts: label errors and duplicates take most of the time, so a bar by detector moves.
    """
    n = len(c["id"])
    ok = c["status"] == "ok"
    has_emb = mm is not None and bool((c["has_embedding"][ok] == 1).all()) and ok.any()
    x = Inputs(c, th, ok, EmbeddingRows(mm, c["id"]) if has_emb else None, mm)
    if not has_emb:
        x.notes.append(
            "no embeddings for every image: near-duplicates by hash only, no "
            "label-error check (scan with --weights to get them)"
        )
    found: list[Found] = []
    for k, detect in enumerate(DETECTORS):
        if progress:
            progress(k, len(DETECTORS), detector_name(detect))
        found += detect(x)

    in_queue, doubtful = queue_files(x, found)
    if doubtful is not None:
        found.append(doubtful)

    s = CleanSummary(files=n, notes=x.notes)
    d = x.duplicates
    s.duplicate_groups = len(np.unique(d.group[d.group >= 0])) if d is not None else 0
    s.review = int((in_queue > 0).sum())
    out: list[IssueRecord] = []
    removed = np.zeros(n, dtype=bool)
    for f in found:
        if not len(f.rows):
            continue
        keep = np.zeros(len(f.rows), bool) if f.keep is None else f.keep.astype(bool)
        count = int((~keep).sum()) if f.kind in DUPLICATE_KINDS else len(f.rows)
        if count:
            s.by_issue[f.kind] = s.by_issue.get(f.kind, 0) + count
            s.confidence[f.kind] = float(np.mean(f.confidence[~keep]))
        if f.kind in DUPLICATE_KINDS and keep.any():
            s.kept[f.kind] = s.kept.get(f.kind, 0) + int(keep.sum())
        for k, r in enumerate(f.rows.tolist()):
            sugg = None if f.suggestion is None else f.suggestion[k]
            reason = None if f.reason is None else f.reason[k]
            out.append(
                IssueRecord(
                    int(c["id"][r]),
                    f.kind,
                    float(f.confidence[k]),
                    None if f.group is None else int(f.group[k]),
                    int(keep[k]),
                    None if sugg is None else str(sugg),
                    int(in_queue[r]),
                    None if reason is None or reason == "" else str(reason),
                )
            )
            if removes(f.kind, bool(keep[k])):
                removed[r] = True
    s.flagged = int(removed.sum())
    labels = x.labels
    s.counts_before = imbalance.class_counts(labels)
    s.counts_after = imbalance.class_counts(labels[~removed & ok])
    s.imbalance_before = imbalance.imbalance_ratio(s.counts_before)
    s.imbalance_after = imbalance.imbalance_ratio(s.counts_after)
    s.plan = imbalance.balancing_plan(s.counts_after, th.oversample_factor)
    for note in s.notes:
        log(note)
    return out, s


def queue_files(x: Inputs, found: list[Found]) -> tuple[np.ndarray, Found | None]:
    """Place in the review queue per row (1 = first, 0 = not queued), and the doubtful labels
    the queue adds (files no detector flagged, whose label the views split on)."""
    n = x.n
    by_kind = {f.kind: f for f in found}
    # A label question on a file another rule removes by default (a copy of the kept one, a
    # blank) changes nothing: those files stay out of the label sources.
    settled = np.zeros(n, bool)
    for f in found:
        keep = np.zeros(len(f.rows), bool) if f.keep is None else f.keep.astype(bool)
        settled[f.rows[[removes(f.kind, bool(k)) for k in keep]]] = True
    cand: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for kind in ("label_error", "label_conflict"):
        if kind in by_kind and len(by_kind[kind].rows):
            f, live = by_kind[kind], ~settled[by_kind[kind].rows]
            cand[kind] = (f.rows[live], f.confidence[live])
    d = x.duplicates
    # A group may lose its picture when its kept copy is flagged by a rule that removes it.
    flagged_kept = np.zeros(n, bool)
    for f in found:
        if f.kind not in GROUP_KINDS and ACTIONS.get(f.kind) in ("drop", "review"):
            flagged_kept[f.rows] = True
    flagged_kept &= d.keep
    if flagged_kept.any():
        rows = np.nonzero(flagged_kept)[0]
        cand["doubtful_kept_copy"] = (rows, np.ones(len(rows)))
    # Borderline scores of the threshold rules, each capped in the queue.
    copies = (d.group >= 0) & ~d.keep & ~d.exact  # the kept copy and byte twins need no decision
    borderline = {"near_duplicate": review_queue.threshold_doubt(d.confidence, copies)}
    for kind in ("upscaled", "blank"):
        f = by_kind[kind]
        mask = np.zeros(n, bool)
        mask[f.rows] = True
        conf = np.zeros(n)
        conf[f.rows] = f.confidence
        borderline[kind] = review_queue.threshold_doubt(conf, mask)
    flagged = np.zeros(n, bool)
    for f in found:
        flagged[f.rows] = True
    best = np.full(n, None, dtype=object)
    if x.label_probs is not None:
        rows, classes, y, le = x.label_probs
        near_miss = np.zeros(n)
        near_miss[rows] = np.where(
            le.is_issue, 0.0, review_queue.label_doubt(le.probs, y, le.is_issue)
        )
        near_miss[flagged | settled] = 0.0
        borderline["doubtful_label"] = near_miss
        top_other = le.probs.copy()
        top_other[np.arange(len(y)), y] = -1
        best[rows] = [classes[i] for i in top_other.argmax(axis=1)]
    for kind, doubt in borderline.items():
        rows = np.nonzero(doubt > 0)[0]
        if len(rows):
            cand[kind] = (rows, doubt[rows])
    queue = review_queue.ranked_queue(cand, n, x.th.review_fraction)
    in_queue = np.zeros(n, dtype=np.int64)
    in_queue[queue] = np.arange(1, len(queue) + 1)
    if x.label_probs is None:
        return in_queue, None
    extra = np.zeros(n, bool)
    extra[queue] = True
    extra &= ~flagged & (best != None)  # noqa: E711  (only labelled rows have a second guess)
    return in_queue, Found.where(
        "doubtful_label",
        extra,
        borderline["doubtful_label"],
        suggestion=best,
        reason=np.full(n, "the views are split about its label", dtype=object),
    )
