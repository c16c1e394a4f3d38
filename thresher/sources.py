"""What to scan: an ImageFolder tree (class = top-level sub-folder) or a CSV/Parquet manifest.

Both become one list of `Entry` rows: a path relative to the source root ('/'-separated), a
label, and what `stat` says. Symlinks are resolved here: one that points inside the tree is an
alias of its target (never scanned twice), one that points nowhere is a broken symlink.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from thresher.errors import ThresherError
from thresher.files import readable_name
from thresher.labels import label_problem

# Files with these extensions are scanned; everything else in a folder tree is counted and skipped.
# (A manifest is taken at its word: every row is scanned, whatever its extension.)
IMAGE_EXTENSIONS = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".pjpeg",
        ".pjp",
        ".png",
        ".gif",
        ".bmp",
        ".dib",
        ".webp",
        ".tif",
        ".tiff",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".ico",
        ".tga",
        ".avif",
        ".heic",
        ".heif",
        ".jp2",
    ]
)
MANIFEST_EXTENSIONS = (".csv", ".parquet", ".pq")


@dataclass(frozen=True)
class Source:
    """A resolved source: the root all paths are relative to, and how entries are listed."""

    root: Path
    kind: str  # "folder" or "manifest"
    manifest: Path | None = None
    path_column: str = "path"
    label_column: str = "label"

    def describe(self) -> dict:
        return {
            "root": str(self.root),
            "kind": self.kind,
            "manifest": str(self.manifest) if self.manifest else None,
        }


@dataclass(frozen=True)
class Entry:
    """One file to catalogue. `alias_of` is set for an in-tree symlink, `broken` for a dead one."""

    path: str
    label: str | None
    size_bytes: int | None
    mtime_ns: int | None
    alias_of: str | None = None
    broken: bool = False
    special: bool = False  # a FIFO, socket or device: reading it could block the scan forever


@dataclass
class Listing:
    entries: list[Entry]
    skipped_extensions: Counter
    unreadable_dirs: list[str] = field(default_factory=list)  # sub-folders that cannot be listed


def resolve_source(
    path: Path | str, path_column: str = "path", label_column: str = "label"
) -> Source:
    """Turn a user's SOURCE argument into a Source, or one clear error."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ThresherError(f"source not found: {p}")
    p = p.resolve()
    if p.is_dir():
        return Source(root=p, kind="folder")
    if p.suffix.lower() in MANIFEST_EXTENSIONS:
        return Source(p.parent, "manifest", p, path_column, label_column)
    raise ThresherError(
        f"source {p} is neither a folder nor a manifest ({', '.join(MANIFEST_EXTENSIONS)})"
    )


def list_entries(source: Source) -> Listing:
    """Every file of the source, stat'ed and with symlinks classified."""
    if source.kind == "folder":
        return _list_folder(source.root)
    return _list_manifest(source)


def _list_folder(root: Path) -> Listing:
    entries: list[Entry] = []
    skipped: Counter = Counter()
    unreadable: list[str] = []
    for rel_dir, files in _walk(root, unreadable):
        label = rel_dir.split("/", 1)[0] if rel_dir else None
        if label is not None and rel_dir == label:
            problem = label_problem(label)
            if problem:
                raise ThresherError(
                    f"class folder {readable_name(label)!r} {problem}: rename it and rerun"
                )
        for name in files:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                skipped[os.path.splitext(name)[1].lower() or "(none)"] += 1
                continue
            entries.append(_stat_entry(root, rel, label))
    return Listing(entries, skipped, unreadable)


def _walk(root: Path, unreadable: list[str]) -> Iterator[tuple[str, list[str]]]:
    """(relative dir, file names), sorted for a stable order; hidden names and dir links skipped.

    Directory symlinks are not followed: that is how loops and double scans are avoided. A
    sub-folder that cannot be listed (no permission, I/O error) is appended to `unreadable`.
    """
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(root / rel if rel else root) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError:
            unreadable.append(rel or ".")
            continue
        files = []
        subdirs = []
        for e in items:
            if e.name.startswith("."):
                continue
            if e.is_dir(follow_symlinks=False):
                subdirs.append(f"{rel}/{e.name}" if rel else e.name)
            elif e.is_symlink() and os.path.isdir(e.path):
                continue
            else:
                files.append(e.name)
        yield rel, files
        stack.extend(reversed(subdirs))


def _stat_entry(root: Path, rel: str, label: str | None) -> Entry:
    full = root / rel
    if full.is_symlink():
        target = Path(os.path.realpath(full))
        if not target.exists():
            return Entry(rel, label, None, None, broken=True)
        try:
            target_rel = target.relative_to(root).as_posix()
        except ValueError:
            target_rel = None  # points outside the tree: scanned as an ordinary file
        if target_rel is not None and target_rel != rel:
            st = full.lstat()
            return Entry(rel, label, st.st_size, st.st_mtime_ns, alias_of=target_rel)
    try:
        st = full.stat()
    except OSError:
        return Entry(rel, label, None, None)
    if not stat.S_ISREG(st.st_mode):
        return Entry(rel, label, None, st.st_mtime_ns, special=True)
    return Entry(rel, label, st.st_size, st.st_mtime_ns)


def _list_manifest(source: Source) -> Listing:
    table = _read_manifest(source.manifest)
    cols = table.column_names
    for want, flag in (
        (source.path_column, "--path-column"),
        (source.label_column, "--label-column"),
    ):
        if want not in cols:
            raise ThresherError(
                f"manifest {source.manifest} has no column {want!r} (columns: {', '.join(cols)}); "
                f"name the right one with {flag}"
            )
    paths = table.column(source.path_column).to_pylist()
    labels = table.column(source.label_column).to_pylist()
    entries = []
    seen = set()
    for row, (raw, label) in enumerate(zip(paths, labels, strict=True), start=2):
        if raw is None or str(raw).strip() == "":
            continue
        if label is not None and str(label).strip() == "":
            label = None  # an empty cell: the file has no label (as a file in a tree's root)
        problem = None if label is None else label_problem(str(label))
        if problem:
            raise ThresherError(
                f"manifest {source.manifest} line {row}: label {str(label)!r} {problem}; "
                "fix the label column and rerun"
            )
        p = Path(str(raw))
        full = Path(os.path.normpath(p if p.is_absolute() else source.root / p))
        try:
            rel = full.relative_to(source.root).as_posix()
        except ValueError:
            rel = full.as_posix()  # outside the manifest's folder: kept absolute
        if rel in seen:
            continue
        seen.add(rel)
        entries.append(_stat_entry(source.root, rel, None if label is None else str(label)))
    return Listing(entries, Counter())


def _read_manifest(path: Path):
    try:
        if path.suffix.lower() == ".csv":
            import pyarrow.csv as pacsv

            return pacsv.read_csv(path)
        import pyarrow.parquet as pq

        return pq.read_table(path)
    except Exception as e:  # pyarrow raises several types; all mean "cannot read this manifest"
        raise ThresherError(f"cannot read manifest {path}: {e}") from None
