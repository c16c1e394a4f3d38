"""`thresher export`: the catalog, its issues and the review decisions -> a clean training manifest.

What each file becomes is decided in this order: a file the scan could not use is dropped; a
person's decision (thresher review) wins; then every issue's action (clean/findings.py ACTIONS,
overridden by the policy). The survivors are split train/validation by class with every
duplicate group on one side, and weighted by the balancing plan. Written atomically: the
manifest in OUT is either the old one or the new one, never half of each.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from thresher._callable import make_callable
from thresher.catalog import Catalog
from thresher.clean import imbalance
from thresher.clean.findings import ACTIONS, GROUP_KINDS
from thresher.config import DEFAULT_WORKSPACE, ExportPolicy
from thresher.data.split import group_stratified_split
from thresher.errors import ThresherError

MANIFEST = "manifest.parquet"
MANIFEST_CSV = "manifest.csv"
SUMMARY = "export.json"
IMAGEFOLDER = "imagefolder"


@dataclass
class ExportSummary:
    """What export wrote: the files kept and why the others were not, per class and split."""

    out: str
    files: int = 0  # catalogued files considered (aliases and vanished files left out)
    exported: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> files
    relabelled: int = 0
    decisions_applied: int = 0
    classes: list[str] = field(default_factory=list)
    counts_before: dict[str, int] = field(default_factory=dict)
    counts_train: dict[str, int] = field(default_factory=dict)
    counts_val: dict[str, int] = field(default_factory=dict)
    plan: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def export(
    workspace: Path | str = DEFAULT_WORKSPACE,
    out: Path | str = "export",
    policy: ExportPolicy | None = None,
    link: str | None = None,
    log=print,
) -> ExportSummary:
    """Write OUT/manifest.parquet + .csv (path, label, split, weight, image_id, group) and
    OUT/export.json; with link='hardlink' or 'symlink', also an ImageFolder tree in
    OUT/imagefolder/{train,val}/{label}/."""
    policy = policy or ExportPolicy()
    unknown = sorted(set(policy.actions) - set(ACTIONS))
    if unknown:
        raise ThresherError(
            f"unknown issue kind(s) in the export policy: {', '.join(unknown)} "
            f"(known: {', '.join(ACTIONS)})"
        )
    if link not in (None, "hardlink", "symlink"):
        raise ThresherError(f"--link must be hardlink or symlink, not {link!r}")
    actions = {**ACTIONS, **policy.actions}
    out = Path(out)
    with Catalog(workspace, create=False) as cat:
        clean_summary = cat.get_meta("clean_summary")
        if clean_summary is None:
            raise ThresherError(f"no issues in {workspace} yet: run `thresher clean` first")
        root = Path(cat.get_meta("source")["root"])
        c = cat.columns(
            ["id", "path", "label", "status"], where="status NOT IN ('alias', 'missing')"
        )
        issue_rows = cat.issues()
        decisions = cat.decisions()

    n = len(c["id"])
    s = ExportSummary(out=str(out), files=n)
    row_of = {int(i): r for r, i in enumerate(c["id"])}
    label = c["label"].copy()
    drop_reason = np.full(n, None, dtype=object)
    group = np.full(n, -1, dtype=np.int64)

    def drop(r: int, reason: str) -> None:
        if drop_reason[r] is None:
            drop_reason[r] = reason

    for status_bad in np.nonzero(c["status"] != "ok")[0]:
        drop(status_bad, str(c["status"][status_bad]))
    decided = np.zeros(n, dtype=bool)
    for image_id, (decision, new_label) in decisions.items():
        r = row_of.get(image_id)
        if r is None or drop_reason[r] is not None:
            continue
        decided[r] = True
        s.decisions_applied += 1
        if decision == "drop":
            drop(r, "review: drop")
        elif decision == "relabel":
            label[r] = new_label
    for _path, _, kind, _, grp, keep, suggested, *_rest, image_id, _d, _dl in issue_rows:
        r = row_of.get(image_id)
        if r is None:
            continue
        if kind in GROUP_KINDS:
            group[r] = grp
        if decided[r]:
            continue
        action = actions[kind]
        if action == "drop":
            drop(r, kind)
        elif action == "keep one" and not keep:
            drop(r, f"{kind} (a copy)")
        elif action == "relabel" and suggested:
            label[r] = suggested
    for r in np.nonzero(np.array([x is None for x in label]) & (drop_reason == None))[0]:  # noqa: E711
        drop(r, "no label")

    s.counts_before = imbalance.class_counts(c["label"])
    alive = drop_reason == None  # noqa: E711
    counts = imbalance.class_counts(label[alive])
    small = {k for k, v in counts.items() if v < policy.min_class_files}
    for r in np.nonzero(alive & np.isin(label.astype(str), list(small)))[0]:
        drop(r, f"class under {policy.min_class_files} files")
    if small:
        s.notes.append(
            f"left out {len(small)} class(es) with under {policy.min_class_files} files: "
            + ", ".join(sorted(small)[:10])
        )
    alive = drop_reason == None  # noqa: E711
    for reason in drop_reason[~alive]:
        s.dropped[reason] = s.dropped.get(reason, 0) + 1
    rows = np.nonzero(alive)[0]
    s.relabelled = int(sum(a != b for a, b in zip(label[rows], c["label"][rows], strict=True)))
    if len(rows) == 0:
        raise ThresherError("nothing left to export: every file was dropped (see the policy)")

    lab = label[rows].astype(str)
    is_val = group_stratified_split(
        lab, group[rows], c["id"][rows], policy.val_fraction, policy.seed
    )
    s.classes = sorted(set(lab))
    s.counts_train = imbalance.class_counts(lab[~is_val])
    s.counts_val = imbalance.class_counts(lab[is_val])
    s.plan = imbalance.balancing_plan(s.counts_train, policy.oversample_factor, policy.target_share)
    weight = np.where(is_val, 1.0, np.array([s.plan.get(x, 1.0) for x in lab]))
    s.exported = len(rows)

    import pyarrow as pa

    table = pa.table(
        {
            "path": pa.array([str(root / p) for p in c["path"][rows]], pa.string()),
            "label": pa.array(lab, pa.string()),
            "split": pa.array(np.where(is_val, "val", "train"), pa.string()),
            "weight": pa.array(weight, pa.float32()),
            "image_id": pa.array(c["id"][rows], pa.int64()),
            "group": pa.array(group[rows], pa.int64()),
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / MANIFEST, lambda p: _parquet(table, p))
    _write_atomic(out / MANIFEST_CSV, lambda p: _csv(table, p))
    if link:
        _link_tree(out / IMAGEFOLDER, table, link)
    doc = {**asdict(s), "policy": policy.model_dump(), "workspace": str(workspace)}
    # What clean found of the labels, for train's plateau diagnosis (it reads no catalog).
    by_issue, files = clean_summary.get("by_issue", {}), max(clean_summary.get("files", 0), 1)
    doc["label_error_share"] = by_issue.get("label_error", 0) / files
    doc["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write_atomic(out / SUMMARY, lambda p: Path(p).write_text(json.dumps(doc, indent=1)))
    for note in s.notes:
        log(note)
    return s


def _parquet(table, path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path)


def _csv(table, path) -> None:
    import pyarrow.csv as pacsv

    pacsv.write_csv(table, path)


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _link_tree(dst: Path, table, how: str) -> None:
    """OUT/imagefolder/{split}/{label}/{id}_{name}: built aside, then swapped in whole."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    t = table.to_pydict()
    for path, lab, split, image_id in zip(
        t["path"], t["label"], t["split"], t["image_id"], strict=True
    ):
        target = tmp / split / lab / f"{image_id}_{Path(path).name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if how == "hardlink":
                os.link(path, target)
            else:
                os.symlink(path, target)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            hint = " (another file system? use --link symlink)" if how == "hardlink" else ""
            raise ThresherError(f"cannot {how} {path}: {e.strerror or e}{hint}") from None
    old = dst.with_name(dst.name + ".old")
    if dst.exists():
        os.replace(dst, old)
    os.replace(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)


# `thresher.export(...)` exports although thresher.export is this module (thresher/_callable.py).
make_callable(__name__, "thresher.export:export")
