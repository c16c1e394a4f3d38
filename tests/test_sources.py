"""Sources: ImageFolder trees (nested, symlinks) and CSV/Parquet manifests."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from thresher.errors import ThresherError
from thresher.sources import list_entries, resolve_source


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_folder_labels_come_from_the_top_level_folder(tmp_path):
    _touch(tmp_path / "cat" / "a.jpg")
    _touch(tmp_path / "cat" / "indoor" / "deep" / "b.PNG")
    _touch(tmp_path / "dog" / "c.webp")
    _touch(tmp_path / "loose.jpg")
    _touch(tmp_path / "dog" / "notes.txt")
    _touch(tmp_path / ".hidden" / "d.jpg")
    _touch(tmp_path / "dog" / ".e.jpg")
    listing = list_entries(resolve_source(tmp_path))
    got = {e.path: e.label for e in listing.entries}
    assert got == {
        "cat/a.jpg": "cat",
        "cat/indoor/deep/b.PNG": "cat",
        "dog/c.webp": "dog",
        "loose.jpg": None,
    }
    assert listing.skipped_extensions == {".txt": 1}
    e = next(e for e in listing.entries if e.path == "cat/a.jpg")
    assert e.size_bytes == 1 and e.mtime_ns > 0


def test_symlinks_inside_the_tree_are_aliases_and_dead_ones_broken(tmp_path):
    root = tmp_path / "crawl"
    outside = tmp_path / "elsewhere.jpg"
    _touch(root / "cat" / "a.jpg")
    _touch(outside)
    os.symlink("a.jpg", root / "cat" / "link.jpg")
    (root / "dog").mkdir()
    os.symlink("../cat/a.jpg", root / "dog" / "cross.jpg")
    os.symlink(outside, root / "dog" / "outside.jpg")
    os.symlink("gone.jpg", root / "dog" / "dead.jpg")
    os.symlink(root / "cat", root / "dirlink")  # directory links are not followed
    entries = {e.path: e for e in list_entries(resolve_source(root)).entries}
    assert set(entries) == {
        "cat/a.jpg",
        "cat/link.jpg",
        "dog/cross.jpg",
        "dog/outside.jpg",
        "dog/dead.jpg",
    }
    assert entries["cat/link.jpg"].alias_of == "cat/a.jpg"
    assert entries["dog/cross.jpg"].alias_of == "cat/a.jpg"
    assert entries["dog/outside.jpg"].alias_of is None and not entries["dog/outside.jpg"].broken
    assert entries["dog/dead.jpg"].broken


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_manifest_paths_are_relative_to_its_folder(tmp_path, fmt):
    _touch(tmp_path / "imgs" / "1.jpg")
    _touch(tmp_path / "imgs" / "2.bin")  # a manifest is taken at its word, whatever the suffix
    table = pa.table(
        {
            "file": ["imgs/1.jpg", str(tmp_path / "imgs" / "2.bin"), "imgs/1.jpg"],
            "cls": ["cat", "dog", "cat"],
        }
    )
    manifest = tmp_path / f"m.{fmt}"
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, manifest)
    else:
        pq.write_table(table, manifest)
    src = resolve_source(manifest, path_column="file", label_column="cls")
    assert src.kind == "manifest" and src.root == tmp_path
    got = {e.path: e.label for e in list_entries(src).entries}
    assert got == {"imgs/1.jpg": "cat", "imgs/2.bin": "dog"}


def test_manifest_without_the_named_column_says_which(tmp_path):
    (tmp_path / "m.csv").write_text("file,label\na.jpg,cat\n")
    with pytest.raises(ThresherError, match=r"no column 'path'.*--path-column"):
        list_entries(resolve_source(tmp_path / "m.csv"))


def test_bad_sources_are_one_clear_error(tmp_path):
    with pytest.raises(ThresherError, match="source not found"):
        resolve_source(tmp_path / "nope")
    (tmp_path / "x.zip").write_bytes(b"")
    with pytest.raises(ThresherError, match="neither a folder nor a manifest"):
        resolve_source(tmp_path / "x.zip")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(ThresherError, match="cannot read manifest"):
        list_entries(resolve_source(tmp_path / "broken.parquet"))
