"""`thresher export`: the catalog, its issues and the review decisions -> a clean training manifest.

What each file becomes is decided in this order: a file the scan could not use is dropped; a
person's decision (thresher review) wins; then every issue's action (issue_model.py ACTIONS,
overridden by the policy). The survivors are split train/validation by class with every
duplicate group on one side, and weighted by the balancing plan. Written as one: the whole
export is written into a new folder beside OUT and swapped in, so manifest.parquet, .csv and
export.json (and the link tree) are either all the old ones or all the new ones.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from thresher.catalog import Catalog
from thresher.clean import imbalance
from thresher.config import DEFAULT_WORKSPACE, ExportPolicy
from thresher.data.split import group_stratified_split
from thresher.errors import ThresherError
from thresher.files import fsync_dir, is_utf8_name, readable_name
from thresher.issue_model import ACTIONS, GROUP_KINDS
from thresher.labels import label_problem

MANIFEST = "manifest.parquet"
# Under this many validation images, a class's validation accuracy moves in steps of 10%+.
MIN_VAL_FILES = 10
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


def orphaned_groups(group: np.ndarray, alive: np.ndarray, drop_reason: np.ndarray) -> int:
    """Duplicate groups with no file left where a copy was dropped as a duplicate: the picture
    is gone from the export although it was never judged bad itself."""
    in_group = group >= 0
    as_copy = np.array([isinstance(r, str) and r.endswith("(a copy)") for r in drop_reason])
    g_alive = set(group[in_group & alive].tolist())
    g_copied = set(group[in_group & as_copy].tolist())
    return len(g_copied - g_alive)


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
    for x in issue_rows:
        r = row_of.get(x.image_id)
        if r is None:
            continue
        if x.issue in GROUP_KINDS:
            group[r] = x.grp
        if decided[r]:
            continue
        action = actions[x.issue]
        if action == "drop":
            drop(r, x.issue)
        elif action == "keep one" and not x.keep:
            drop(r, f"{x.issue} (a copy)")
        elif action == "relabel" and x.suggested_label:
            label[r] = x.suggested_label
    for r in np.nonzero(np.array([x is None for x in label]) & (drop_reason == None))[0]:  # noqa: E711
        drop(r, "no label")
    _check_labels(label, drop_reason, c["path"])
    for r in np.nonzero(drop_reason == None)[0]:  # noqa: E711
        path = c["path"][r]
        if not is_utf8_name(path):
            drop(r, "file name not UTF-8")  # a manifest holds UTF-8 text; rename the file
        elif not os.path.isfile(root / path):
            drop(r, "vanished since the scan")
    for reason, advice in (
        ("file name not UTF-8", "rename them and rescan to export them"),
        ("vanished since the scan", "rescan to update the catalog"),
    ):
        gone = [readable_name(c["path"][r]) for r in np.nonzero(drop_reason == reason)[0]]
        if gone:
            s.notes.append(
                f"left out {len(gone)} file(s): {reason} ({', '.join(gone[:3])}"
                f"{', ...' if len(gone) > 3 else ''}); {advice}"
            )

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
    orphans = orphaned_groups(group, alive, drop_reason)
    if orphans:
        note = (
            f"warning: {orphans} duplicate group(s) left with no copy: their copies were dropped "
            "as duplicates and the kept one by a decision or another issue's action"
        )
        s.notes.append(note)  # said once the export is written, with the other notes
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
    thin = {k: s.counts_val.get(k, 0) for k in s.classes if s.counts_val.get(k, 0) < MIN_VAL_FILES}
    if thin:
        note = (
            f"warning: {len(thin)} class(es) have under {MIN_VAL_FILES} validation images ("
            + ", ".join(f"{k}: {v}" for k, v in sorted(thin.items(), key=lambda kv: kv[1])[:5])
            + ("" if len(thin) <= 5 else ", ...")
            + "): their validation accuracy is noise; gather more, or raise val_fraction"
        )
        s.notes.append(note)  # said once the export is written, with the other notes
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
    doc = {**asdict(s), "policy": policy.model_dump(), "workspace": str(workspace)}
    # What clean found of the labels, for train's plateau diagnosis (it reads no catalog).
    by_issue, files = clean_summary.get("by_issue", {}), max(clean_summary.get("files", 0), 1)
    doc["label_error_share"] = by_issue.get("label_error", 0) / files
    doc["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def write(folder: Path) -> None:
        _parquet(table, folder / MANIFEST)
        _csv(table, folder / MANIFEST_CSV)
        if link:
            _link_tree(folder / IMAGEFOLDER, table, link)
        (folder / SUMMARY).write_text(json.dumps(doc, indent=1))

    _write_folder(out, write)
    for note in s.notes:
        log(note)
    return s


def _check_labels(label: np.ndarray, drop_reason: np.ndarray, paths: np.ndarray) -> None:
    """Every exported label must be a safe folder name (it becomes one with --link)."""
    for r in np.nonzero(drop_reason == None)[0]:  # noqa: E711
        problem = label_problem(str(label[r]))
        if problem:
            raise ThresherError(
                f"label {readable_name(str(label[r]))!r} of {readable_name(paths[r])} {problem}: "
                "relabel it in `thresher review` (or fix the source) and export again"
            )


_OWN = {MANIFEST, MANIFEST_CSV, SUMMARY, IMAGEFOLDER}


def _write_folder(out: Path, write) -> None:
    """Write the whole export into a new folder beside OUT, then swap it in as one.

    The three files (and the link tree) always agree: a reader sees the old export or the
    new one. Linux swaps the two folders atomically (renameat2 RENAME_EXCHANGE); elsewhere
    OUT is renamed aside for an instant, and the old folder survives any failure.
    """
    if out.exists() and not out.is_dir():
        raise ThresherError(f"--out {out} is a file, not a folder: choose a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _OWN)
        if foreign:
            raise ThresherError(
                f"--out {out} holds files export did not write ({', '.join(foreign[:3])}): "
                "export replaces its folder whole, so choose an empty or export folder"
            )
    parent = out.absolute().parent
    new = parent / f".{out.name}.new-{os.getpid()}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for stale in parent.glob(f".{out.name}.new-*"):  # left by a killed export
            shutil.rmtree(stale, ignore_errors=True)
        new.mkdir()
        write(new)
        for f in new.iterdir():
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if out.is_dir() and _exchange(new, out):
            shutil.rmtree(new, ignore_errors=True)  # now the old export
        else:
            old = parent / f".{out.name}.old-{os.getpid()}"
            if out.is_dir():
                os.replace(out, old)
            os.replace(new, out)
            shutil.rmtree(old, ignore_errors=True)
        fsync_dir(parent)
    except OSError as e:
        shutil.rmtree(new, ignore_errors=True)
        raise ThresherError(
            f"cannot write the export at {out}: {e.strerror or e}; "
            "the previous export (if any) is untouched"
        ) from None
    except ThresherError:  # e.g. --link across file systems: no half-written folder is left
        shutil.rmtree(new, ignore_errors=True)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2
        rc = libc.renameat2(
            at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), ctypes.c_uint(rename_exchange)
        )
    except (OSError, AttributeError):
        return False
    return rc == 0


def _parquet(table, path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path)


def _csv(table, path) -> None:
    import pyarrow.csv as pacsv

    pacsv.write_csv(table, path)


def _link_tree(dst: Path, table, how: str) -> None:
    """OUT/imagefolder/{split}/{label}/{id}_{name} (inside the new export folder)."""
    t = table.to_pydict()
    for path, lab, split, image_id in zip(
        t["path"], t["label"], t["split"], t["image_id"], strict=True
    ):
        if label_problem(lab):  # checked before; a folder outside dst must be impossible
            raise ThresherError(f"label {lab!r} {label_problem(lab)}")
        target = dst / split / lab / f"{image_id}_{Path(path).name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if how == "hardlink":
                os.link(path, target)
            else:
                os.symlink(path, target)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            hint = " (another file system? use --link symlink)" if how == "hardlink" else ""
            raise ThresherError(f"cannot {how} {path}: {e.strerror or e}{hint}") from None
