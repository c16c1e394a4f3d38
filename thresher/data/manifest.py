"""An exported manifest as flat numpy arrays, the form a DataLoader can share with its workers.

Per-sample data lives in numpy arrays (paths as fixed-width bytes), never in Python lists of
str: a worker that touches a Python object writes its refcount, which copies the page it sits
on, and over a multi-day run that copy-on-access grows every worker's memory without bound.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thresher.errors import ThresherError


@dataclass(frozen=True)
class Manifest:
    """Rows of a manifest: `paths` (bytes, utf-8), `targets` (class index), `weights`,
    `is_val`; `classes` names the class indices."""

    paths: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    is_val: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)


# Files decoded up front to tell a manifest of images from one of something else.
_PROBE_FILES = 16


def load_manifest(data: Path | str, probe: bool = True) -> Manifest:
    """Read DIR/manifest.parquet (what `thresher export` wrote), or a .parquet/.csv file.

    Needs `path` and `label` columns; `split` (train/val) and `weight` are optional. Relative
    paths are relative to the manifest's folder (as the scan reads a manifest). Refused in one
    line: empty labels, a single class, and (with `probe`) a manifest none of whose first
    files can be read as an image.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    p = Path(data)
    if not p.exists():
        raise ThresherError(
            f"--data {p}: no such folder or file (an export folder or a manifest: `thresher "
            "export --out NEW_DIR` makes one)"
        )
    if p.is_dir() and not (p / "manifest.parquet").exists():
        if any(c.is_dir() and not c.name.startswith(".") for c in p.iterdir()):
            # Class folders of images: the source, not an export. Exporting into it would mix
            # the manifest into the crawl.
            raise ThresherError(
                f"{p} looks like an image folder, not an export: run `thresher scan {p}`, "
                "`thresher clean` and `thresher export --out EXPORT_DIR` (a new folder), "
                "then pass --data EXPORT_DIR"
            )
        raise ThresherError(f"no manifest.parquet in {p}: run `thresher export --out {p}` first")
    if p.is_dir():
        p = p / "manifest.parquet"
    try:
        t = pq.read_table(p) if p.suffix != ".csv" else pacsv.read_csv(p)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise ThresherError(f"cannot read the manifest {p}: {e}") from None
    missing = {"path", "label"} - set(t.column_names)
    if missing:
        raise ThresherError(f"the manifest {p} lacks the column(s) {', '.join(sorted(missing))}")
    raw_labels = t.column("label").to_pylist()
    blank = [i for i, x in enumerate(raw_labels) if x is None or not str(x).strip()]
    if blank:
        raise ThresherError(
            f"the manifest {p} has {len(blank)} row(s) without a label (first: row {blank[0] + 1}"
            "): label them or leave them out"
        )
    labels = np.asarray([str(x) for x in raw_labels], dtype=str)
    classes = tuple(sorted(set(labels.tolist())))
    if len(classes) < 2:
        raise ThresherError(
            f"the manifest {p} has {len(classes)} class(es) ({', '.join(classes)}): a "
            "classifier needs at least two"
        )
    raw_paths = t.column("path").to_pylist()
    if any(x is None for x in raw_paths):
        raise ThresherError(f"the manifest {p} has rows without a path")
    base = p.parent.absolute()
    paths = np.array(
        [x.encode() if os.path.isabs(x) else str(base / x).encode() for x in raw_paths],
        dtype=np.bytes_,
    )  # one fixed-width array, no per-row objects
    if probe:
        _probe_images(p, paths)
    if "split" in t.column_names:
        split = np.asarray(t.column("split").to_numpy(zero_copy_only=False), dtype=str)
        bad = sorted(set(split.tolist()) - {"train", "val"})
        if bad:
            raise ThresherError(f"the manifest's split column holds {bad}: only train and val")
        is_val = split == "val"
    else:
        is_val = np.zeros(len(labels), dtype=bool)
    weights = (
        t.column("weight").to_numpy().astype(np.float32)
        if "weight" in t.column_names
        else np.ones(len(labels), dtype=np.float32)
    )
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ThresherError("the manifest's weight column must hold finite values >= 0")
    return Manifest(
        paths=paths,
        targets=np.searchsorted(classes, labels).astype(np.int64),
        weights=weights,
        is_val=is_val,
        classes=classes,
    )


def _probe_images(manifest: Path, paths: np.ndarray) -> None:
    """One line when none of the first files is an image (all missing, or /etc/passwd)."""
    from thresher.config import ScanConfig
    from thresher.files import FileRefused, read_regular
    from thresher.images import DecodeIssue, decode

    first = None
    for raw in paths[:_PROBE_FILES]:
        path = raw.decode()
        try:
            decode(read_regular(path), 64, ScanConfig().max_image_pixels)
            return
        except (FileRefused, DecodeIssue) as e:
            first = first or f"{path}: {e}"
    raise ThresherError(
        f"none of the first {min(len(paths), _PROBE_FILES)} files of the manifest {manifest} "
        f"is a readable image ({first}); are the paths right? relative ones are read from "
        "the manifest's folder"
    )
