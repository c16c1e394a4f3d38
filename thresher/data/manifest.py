"""An exported manifest as flat numpy arrays, the form a DataLoader can share with its workers.

Per-sample data lives in numpy arrays (paths as fixed-width bytes), never in Python lists of
str: a worker that touches a Python object writes its refcount, which copies the page it sits
on, and over a multi-day run that copy-on-access grows every worker's memory without bound.
"""

from __future__ import annotations

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


def load_manifest(data: Path | str) -> Manifest:
    """Read DIR/manifest.parquet (what `thresher export` wrote), or a .parquet/.csv file.

    Needs `path` and `label` columns; `split` (train/val) and `weight` are optional.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    p = Path(data)
    if p.is_dir():
        p = p / "manifest.parquet"
    if not p.exists():
        raise ThresherError(f"no manifest at {p}: run `thresher export --out {p.parent}` first")
    try:
        t = pq.read_table(p) if p.suffix != ".csv" else pacsv.read_csv(p)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise ThresherError(f"cannot read the manifest {p}: {e}") from None
    missing = {"path", "label"} - set(t.column_names)
    if missing:
        raise ThresherError(f"the manifest {p} lacks the column(s) {', '.join(sorted(missing))}")
    labels = np.asarray(t.column("label").to_numpy(zero_copy_only=False), dtype=str)
    classes = tuple(sorted(set(labels.tolist())))
    paths = np.array(
        [s.encode() for s in t.column("path").to_pylist()], dtype=np.bytes_
    )  # one fixed-width array, no per-row objects
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
