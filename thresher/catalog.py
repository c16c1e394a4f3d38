"""The workspace: one SQLite file (WAL) plus a float16 embeddings matrix memory-mapped from .npy.

This is the only module that writes SQL. Every stage reads and writes through it, and every
write is one short transaction, so a crash (SIGKILL included) loses at most the batch in flight
and never leaves a corrupt catalog.

Rows are keyed by `id`, an integer assigned the first time a path is seen and never reused
(rows are never deleted: a file that disappears is marked `missing`). Row `id` of
`embeddings.npy` holds that image's embedding, so catalog and embeddings are aligned by id.
Paths are stored relative to the source root, '/'-separated. A name that is not valid UTF-8
(bytes from the file system, surrogate-escaped by Python) is stored losslessly: its raw bytes
as TEXT (`CAST(? AS TEXT)`), read back surrogate-escaped, so a rescan finds it again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from thresher.errors import ThresherError
from thresher.issue_model import DUPLICATE_KINDS, IssueRecord, IssueRow

SCHEMA_VERSION = 3
DB_NAME = "catalog.sqlite"
EMBEDDINGS_NAME = "embeddings.npy"

# Scan outcome of a file. Everything but "ok" and "alias" is an issue the clean stage reports.
STATUSES = (
    "ok",  # decoded and measured
    "alias",  # a symlink to another file of the tree; not scanned twice (alias_of = target id)
    "corrupt",  # an image format, but decoding failed (truncated, bad data)
    "empty",  # zero bytes
    "not_image",  # not a format Pillow can identify (an HTML page saved as .jpg, ...)
    "oversized",  # over max_file_bytes (never read) or max_image_pixels (never decoded)
    "unreadable",  # not read: permissions, I/O error, or not a regular file (FIFO, device)
    "broken_symlink",  # a symlink whose target does not exist
    "missing",  # was in the catalog, no longer on disk
)

# The measured columns, in one place: name -> SQL type. The scan fills them; later stages read them.
MEASURE_COLUMNS = {
    "checksum": "TEXT",  # SHA-256 of the file's bytes, hex (as sha256sum prints it)
    "pixel_checksum": "TEXT",  # SHA-256 of the decoded pixels (hashes.pixel_checksum)
    "format": "TEXT",
    "mode": "TEXT",  # Pillow mode as stored in the file, before conversion to RGB
    "width": "INTEGER",  # as displayed, after EXIF orientation
    "height": "INTEGER",
    "phash": "INTEGER",  # 64-bit pHash as a signed int64 (same bits as imagehash's hex string)
    "dhash": "INTEGER",
    "mean_r": "REAL",  # per-channel mean, 0-255: a cheap second signal for duplicate checks
    "mean_g": "REAL",
    "mean_b": "REAL",
    "std_r": "REAL",  # per-channel pixel standard deviation, 0-255
    "std_g": "REAL",
    "std_b": "REAL",
    "entropy": "REAL",  # grey-level histogram entropy, bits (0 = one grey level, 8 = uniform)
    "dominant_share": "REAL",  # share of pixels in the most common colour (12-bit quantised)
    "blur_slope": "REAL",  # log2 D(2)/D(1) of pixel differences: ~1 sharp, ~2 smooth (upscaled)
    "effective_short_side": "INTEGER",  # estimated short side before any upscaling (quality.py)
}

# Every column of `images`, with its SQL definition: the schema and the numpy types that
# Catalog.columns returns both come from here.
IMAGE_COLUMNS = {
    "id": "INTEGER PRIMARY KEY",
    "path": "TEXT NOT NULL UNIQUE",
    "label": "TEXT",
    "size_bytes": "INTEGER",
    "mtime_ns": "INTEGER",
    "status": "TEXT NOT NULL",
    "reason": "TEXT",
    "alias_of": "INTEGER REFERENCES images(id)",
    **MEASURE_COLUMNS,
    "has_embedding": "INTEGER NOT NULL DEFAULT 0",
    "scanned_at": "REAL",
}
_HASH_COLUMNS = ("phash", "dhash")  # unsigned 64-bit, stored as signed int64

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    {", ".join(f"{k} {v}" for k, v in IMAGE_COLUMNS.items())}
);
CREATE INDEX IF NOT EXISTS images_status ON images(status);
CREATE TABLE IF NOT EXISTS issues (
    image_id INTEGER NOT NULL REFERENCES images(id),
    issue TEXT NOT NULL,
    confidence REAL NOT NULL,
    grp INTEGER,
    keep INTEGER NOT NULL DEFAULT 0,
    suggested_label TEXT,
    review INTEGER NOT NULL DEFAULT 0,  -- place in the review queue, 1 = first; 0 = not queued
    reason TEXT,
    PRIMARY KEY (image_id, issue)
);
-- A person's decisions (thresher review). Kept apart from `issues`, which clean replaces
-- wholesale: a decision is about the file, and survives a re-clean.
CREATE TABLE IF NOT EXISTS decisions (
    image_id INTEGER PRIMARY KEY REFERENCES images(id),
    decision TEXT NOT NULL CHECK (decision IN ('keep', 'drop', 'relabel')),
    label TEXT CHECK ((decision = 'relabel') = (label IS NOT NULL)),
    decided_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_checksum ON images(checksum);
"""


@dataclass(frozen=True)
class Known:
    """What the catalog remembers of a file, enough to decide whether to scan it again."""

    id: int
    size_bytes: int | None
    mtime_ns: int | None
    status: str
    has_embedding: bool
    label: str | None


class QueuedFile(NamedTuple):
    """A file in the review queue, and what a person decided about it (None: not yet)."""

    id: int
    path: str
    label: str | None
    issues: str  # its issue kinds, comma-separated
    decision: str | None
    decided_label: str | None


class GroupMember(NamedTuple):
    """A file of a duplicate group: whether clean kept it, and how sure it is a copy."""

    id: int
    path: str
    label: str | None
    keep: int
    confidence: float


class Catalog:
    """A workspace folder: `catalog.sqlite` (WAL) and `embeddings.npy` (float16, rows = ids)."""

    def __init__(self, workspace: Path | str, create: bool = True):
        self.workspace = Path(workspace)
        self.db_path = self.workspace / DB_NAME
        self.embeddings_path = self.workspace / EMBEDDINGS_NAME
        if not self.db_path.exists() and not create:
            raise ThresherError(
                f"no catalog in {self.workspace}: run `thresher scan SOURCE --workspace "
                f"{self.workspace}` first"
            )
        try:
            self.workspace.mkdir(parents=True, exist_ok=True)
            probe = self.workspace / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise ThresherError(
                f"cannot write the workspace {self.workspace}: {e.strerror or e}; "
                "choose another with --workspace"
            ) from None
        # check_same_thread=False: the review server shares one catalog between its request
        # threads and serialises every call itself.
        self._db = sqlite3.connect(
            self.db_path, timeout=30, isolation_level=None, check_same_thread=False
        )
        # TEXT comes back surrogate-escaped where it is not UTF-8 (file names; see _bind).
        self._db.text_factory = _text_from_db
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process crashes in WAL mode; only an OS crash can lose
            # the last commits, never corrupt the file.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as e:  # a full disk, a damaged or foreign file
            self._db.close()
            raise ThresherError(
                f"cannot open the catalog {self.db_path}: {e} (a full disk? a damaged file?)"
            ) from None

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _migrate(self) -> None:
        # executescript commits on its own, so it runs outside a transaction helper; every
        # statement is IF NOT EXISTS, so a crash half-way is repaired by the next open.
        self._db.executescript(_SCHEMA)
        version = self.get_meta("schema_version")
        if version is not None and int(version) > SCHEMA_VERSION:
            raise ThresherError(
                f"{self.db_path} has schema version {version}, newer than this thresher "
                f"({SCHEMA_VERSION}): upgrade thresher"
            )
        # Version 2 added measured columns; a catalog from an older scan gets them empty (NULL),
        # and its files are measured again only if they change (rescan them to fill the columns).
        have = {r[1] for r in self._db.execute("PRAGMA table_info(images)")}
        with self._tx():
            for name, sql_type in MEASURE_COLUMNS.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE images ADD COLUMN {name} {sql_type}")
            self.set_meta("schema_version", SCHEMA_VERSION)

    def _tx(self):
        return _Transaction(self._db)

    # -- meta ------------------------------------------------------------------------------------
    def get_meta(self, key: str, default=None):
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, json.dumps(value)),
        )

    # -- reads -----------------------------------------------------------------------------------
    def known(self) -> dict[str, Known]:
        """Every catalogued path and what the scan needs to know to skip or redo it."""
        rows = self._db.execute(
            "SELECT path, id, size_bytes, mtime_ns, status, has_embedding, label FROM images"
        )
        return {r[0]: Known(r[1], r[2], r[3], r[4], bool(r[5]), r[6]) for r in rows}

    def status_counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM images GROUP BY status")
        return dict(rows.fetchall())

    def columns(self, names: Sequence[str], where: str | None = None) -> dict[str, np.ndarray]:
        """Catalog columns as numpy arrays (ordered by id): what the pure detectors take.

        `where` is a fixed SQL condition written by thresher itself (never user input).
        """
        bad = [n for n in names if n not in IMAGE_COLUMNS]
        if bad:
            raise ThresherError(f"unknown catalog column(s): {', '.join(bad)}")
        sql = f"SELECT {', '.join(names)} FROM images"
        if where:
            sql += f" WHERE {where}"
        rows = self._db.execute(sql + " ORDER BY id").fetchall()
        out = {}
        for i, name in enumerate(names):
            values = [r[i] for r in rows]
            sql_type = IMAGE_COLUMNS[name]
            if sql_type.startswith("TEXT"):
                out[name] = np.array(values, dtype=object)
            elif name in _HASH_COLUMNS:
                hashes = [0 if v is None else v for v in values]
                out[name] = np.array(hashes, dtype=np.int64).view(np.uint64)
            elif sql_type.startswith("INTEGER") and (
                "NOT NULL" in sql_type or "PRIMARY" in sql_type
            ):
                out[name] = np.array(values, dtype=np.int64)
            else:  # nullable numbers: NaN for NULL
                out[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        return out

    # -- writes ----------------------------------------------------------------------------------
    def write_scanned(
        self, rows: Sequence[dict], embeddings: np.ndarray | None = None
    ) -> list[int]:
        """Insert or update scanned files in one transaction; return their ids.

        `embeddings`, when given, holds one row per entry of `rows` (NaN rows = none). They are
        written to the memmap and flushed *before* the commit that sets has_embedding, so a
        crash can never leave a row that claims an embedding it does not have.
        """
        now = time.time()
        cols = ["path", "label", "size_bytes", "mtime_ns", "status", "reason", *MEASURE_COLUMNS]
        marks = [_TEXT if IMAGE_COLUMNS[c].startswith("TEXT") else "?" for c in cols]
        sql = (
            f"INSERT INTO images({', '.join(cols)}, has_embedding, scanned_at, alias_of) "
            f"VALUES({', '.join(marks)}, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
            + ", ".join(f"{c}=excluded.{c}" for c in [*cols[1:], "has_embedding", "scanned_at"])
            + ", alias_of=NULL RETURNING id"
        )
        has = np.zeros(len(rows), dtype=bool)
        if embeddings is not None:
            has = np.isfinite(embeddings).all(axis=1)
        with self._tx():
            ids = []
            for row, h in zip(rows, has, strict=True):
                values = [_bind(row.get(c)) for c in cols] + [int(h), now, None]
                ids.append(self._db.execute(sql, values).fetchone()[0])
            if embeddings is not None and has.any():
                idx = np.array(ids)[has]
                self._write_embeddings(idx, embeddings[has])
        return ids

    def write_aliases(self, aliases: Iterable[tuple[dict, str]]) -> None:
        """Record symlinks as aliases: (row with path/label/size/mtime, target's relative path)."""
        sql = (
            "INSERT INTO images(path, label, size_bytes, mtime_ns, status, reason, alias_of, "
            f"has_embedding, scanned_at) VALUES({_TEXT}, {_TEXT}, ?, ?, 'alias', {_TEXT}, "
            f"(SELECT id FROM images WHERE path={_TEXT}), 0, ?) ON CONFLICT(path) DO UPDATE SET "
            "label=excluded.label, size_bytes=excluded.size_bytes, mtime_ns=excluded.mtime_ns, "
            "status='alias', reason=excluded.reason, alias_of=excluded.alias_of, "
            "scanned_at=excluded.scanned_at"
        )
        now = time.time()
        with self._tx():
            for row, target in aliases:
                self._db.execute(
                    sql,
                    (
                        _bind(row["path"]),
                        _bind(row.get("label")),
                        row.get("size_bytes"),
                        row.get("mtime_ns"),
                        _bind(f"symlink to {target}"),
                        _bind(target),
                        now,
                    ),
                )

    def set_labels(self, labels: Iterable[tuple[str, str | None]]) -> None:
        """Relabel files by path (a manifest changed its mind; the pixels did not)."""
        with self._tx():
            self._db.executemany(
                f"UPDATE images SET label={_TEXT} WHERE path={_TEXT}",
                [(_bind(lb), _bind(p)) for p, lb in labels],
            )

    def mark_missing(self, paths: Iterable[str]) -> int:
        with self._tx():
            cur = self._db.executemany(
                "UPDATE images SET status='missing', reason='no longer on disk', has_embedding=0 "
                f"WHERE path={_TEXT}",
                [(_bind(p),) for p in paths],
            )
        return cur.rowcount

    def reset_embeddings(self, embedder: str | None, dim: int | None) -> None:
        """Forget every embedding (the embedder changed): flags cleared, file removed."""
        with self._tx():
            self._db.execute("UPDATE images SET has_embedding=0")
            self.set_meta("embedder", embedder)
            self.set_meta("embedding_dim", dim)
        self.embeddings_path.unlink(missing_ok=True)

    # -- issues (written by clean) ----------------------------------------------------------------
    ISSUE_COLUMNS = IssueRecord._fields

    def replace_issues(self, rows: Sequence[IssueRecord], summary: dict) -> None:
        """Replace the whole issue table and the clean summary, in one transaction."""
        with self._tx():
            self._db.execute("DELETE FROM issues")
            # suggested_label and reason may quote a non-UTF-8 folder name (see _bind).
            text = ("suggested_label", "reason")
            marks = [_TEXT if c in text else "?" for c in self.ISSUE_COLUMNS]
            self._db.executemany(
                f"INSERT INTO issues({', '.join(self.ISSUE_COLUMNS)}) VALUES({', '.join(marks)})",
                ([_bind(v) for v in row] for row in rows),
            )
            self.set_meta("clean_summary", summary)

    def issues(self, image_ids: Sequence[int] | None = None) -> list[IssueRow]:
        """The issue table joined with paths, labels and decisions: one IssueRow per (file,
        issue). `image_ids` limits it to those files."""
        where = ""
        if image_ids is not None:
            where = f"WHERE s.image_id IN ({', '.join(str(int(i)) for i in image_ids)}) "
        rows = self._db.execute(
            "SELECT i.path, i.label, s.issue, s.confidence, s.grp, s.keep, s.suggested_label, "
            "s.review, s.reason, i.id, d.decision, d.label FROM issues s "
            "JOIN images i ON i.id = s.image_id LEFT JOIN decisions d ON d.image_id = i.id "
            + where
            + "ORDER BY s.issue, s.grp, s.confidence DESC, i.path"
        )
        return [IssueRow._make(r) for r in rows]

    def review_queue(self) -> list[QueuedFile]:
        """The queued files in queue order."""
        rows = self._db.execute(
            "SELECT i.id, i.path, i.label, GROUP_CONCAT(s.issue), d.decision, d.label "
            "FROM issues s JOIN images i ON i.id = s.image_id "
            "LEFT JOIN decisions d ON d.image_id = i.id "
            "WHERE s.review > 0 GROUP BY i.id ORDER BY MIN(s.review), i.id"
        ).fetchall()
        return [QueuedFile(*r) for r in rows]

    def review_progress(self) -> tuple[int, int]:
        """(files in the review queue, how many of them have a decision)."""
        total, decided = self._db.execute(
            "SELECT COUNT(DISTINCT s.image_id), COUNT(DISTINCT d.image_id) FROM issues s "
            "LEFT JOIN decisions d ON d.image_id = s.image_id WHERE s.review > 0"
        ).fetchone()
        return total, decided

    def group_members(self, group: int) -> list[GroupMember]:
        """The files of one duplicate group, the kept copy first."""
        rows = self._db.execute(
            "SELECT i.id, i.path, i.label, MAX(s.keep), MAX(s.confidence) FROM issues s "
            "JOIN images i ON i.id = s.image_id WHERE s.grp = ? "
            f"AND s.issue IN {DUPLICATE_KINDS} "
            "GROUP BY i.id ORDER BY MAX(s.keep) DESC, MAX(s.confidence) DESC, i.path",
            (int(group),),
        ).fetchall()
        return [GroupMember(*r) for r in rows]

    def image(self, image_id: int) -> dict | None:
        """One catalog row as a dict (every column of `images`), or None."""
        cur = self._db.execute("SELECT * FROM images WHERE id = ?", (int(image_id),))
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))

    # -- decisions (written by review) ------------------------------------------------------------
    DECISIONS = ("keep", "drop", "relabel")

    def decide(self, image_id: int, decision: str, label: str | None = None):
        """Record a person's decision about a file; return the one it replaces (or None).

        One short transaction: the decision is on disk when this returns.
        """
        if decision not in self.DECISIONS:
            raise ThresherError(f"decision must be one of {', '.join(self.DECISIONS)}")
        if (decision == "relabel") != (label is not None):
            raise ThresherError("a label goes with 'relabel' and only with it")
        with self._tx():
            previous = self._decision(image_id)
            try:
                self._db.execute(
                    "INSERT INTO decisions(image_id, decision, label, decided_at) "
                    "VALUES(?, ?, ?, ?) ON CONFLICT(image_id) DO UPDATE SET "
                    "decision=excluded.decision, label=excluded.label, "
                    "decided_at=excluded.decided_at",
                    (int(image_id), decision, label, time.time()),
                )
            except sqlite3.IntegrityError:
                raise ThresherError(f"no image with id {image_id} in the catalog") from None
        return previous

    def undecide(self, image_id: int):
        """Forget the decision about a file; return the one it had (or None)."""
        with self._tx():
            previous = self._decision(image_id)
            self._db.execute("DELETE FROM decisions WHERE image_id = ?", (int(image_id),))
        return previous

    def decisions(self) -> dict[int, tuple[str, str | None]]:
        """Every decision: image id -> (decision, label)."""
        rows = self._db.execute("SELECT image_id, decision, label FROM decisions")
        return {r[0]: (r[1], r[2]) for r in rows}

    def _decision(self, image_id: int):
        row = self._db.execute(
            "SELECT decision, label FROM decisions WHERE image_id = ?", (int(image_id),)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    # -- embeddings ------------------------------------------------------------------------------
    def embeddings(self) -> np.ndarray | None:
        """The embeddings matrix, read-only and memory-mapped; row i belongs to image id i.

        Rows of images without an embedding (has_embedding = 0) hold zeros or stale values.
        """
        if not self.embeddings_path.exists():
            return None
        return np.load(self.embeddings_path, mmap_mode="r")

    def _write_embeddings(self, ids: np.ndarray, values: np.ndarray) -> None:
        dim = values.shape[1]
        need = int(ids.max()) + 1
        _ensure_npy_capacity(self.embeddings_path, need, dim)
        mm = np.load(self.embeddings_path, mmap_mode="r+")
        if mm.shape[1] != dim:
            raise ThresherError(
                f"{self.embeddings_path} holds {mm.shape[1]}-d embeddings, not {dim}-d"
            )
        mm[ids] = values.astype(np.float16)
        mm.flush()
        del mm


class EmbeddingRows:
    """Embeddings of the given image ids, row k = ids[k], read lazily from the memmap.

    What the detectors and the neighbour index take: it indexes like an (len(ids), dim) array.
    """

    def __init__(self, mm: np.ndarray, ids: np.ndarray):
        self.mm, self.ids = mm, ids
        self.shape = (len(ids), mm.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, rows):
        return self.mm[self.ids[rows]]


# A TEXT parameter: a str binds as itself; bytes (a non-UTF-8 name, from _bind) become TEXT
# holding exactly those bytes, so such a path compares equal to itself on the next scan.
_TEXT = "CAST(? AS TEXT)"


def _bind(value):
    """A value for a TEXT parameter: str as is, or its raw bytes when it is not UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogateescape")
    return value


def _text_from_db(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


# -- a growable .npy ------------------------------------------------------------------------------
# The header is written with a fixed length, so growing the matrix is: extend the file, rewrite
# the shape in place. No copy, and a crash in between leaves a valid (smaller) array.
_NPY_HEADER_BYTES = 128


def _npy_header(rows: int, dim: int) -> bytes:
    d = f"{{'descr': '<f2', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    body_len = _NPY_HEADER_BYTES - 10
    return (
        b"\x93NUMPY\x01\x00" + struct.pack("<H", body_len) + d.ljust(body_len - 1).encode() + b"\n"
    )


def _ensure_npy_capacity(path: Path, rows_needed: int, dim: int) -> None:
    if path.exists():
        current = np.load(path, mmap_mode="r")
        if current.shape[0] >= rows_needed:
            return
        rows = max(rows_needed, int(current.shape[0] * 1.5) + 1024)
        with open(path, "r+b") as f:
            _allocate(f, _NPY_HEADER_BYTES + rows * dim * 2)
            f.flush()
            os.fsync(f.fileno())
            f.seek(0)
            f.write(_npy_header(rows, dim))
        return
    rows = max(rows_needed, 1024)
    tmp = path.with_suffix(".npy.tmp")
    with open(tmp, "wb") as f:
        f.write(_npy_header(rows, dim))
        f.flush()
        _allocate(f, _NPY_HEADER_BYTES + rows * dim * 2)
    os.replace(tmp, path)


def _allocate(f, size: int) -> None:
    """Grow the file to `size` with its blocks reserved, or raise OSError (ENOSPC) now.

    A sparse extension (truncate) succeeds on a full disk, and the memmap write into it later
    kills the process with SIGBUS and no message; reserving the blocks turns that into an error
    the scan can report.
    """
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(f.fileno(), 0, size)
    else:  # pragma: no cover - not Linux
        f.truncate(size)
