"""The catalog: WAL SQLite, stable ids, float16 embeddings aligned by id, atomic batches."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from thresher.catalog import SCHEMA_VERSION, Catalog
from thresher.errors import ThresherError


def _row(path, **kw):
    return {"path": path, "label": "cat", "size_bytes": 10, "mtime_ns": 1, "status": "ok", **kw}


def test_new_catalog_is_wal_sqlite_with_a_schema_version(tmp_path):
    with Catalog(tmp_path / "ws") as cat:
        assert cat.get_meta("schema_version") == SCHEMA_VERSION
    db = sqlite3.connect(tmp_path / "ws" / "catalog.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_ids_are_stable_when_a_path_is_rewritten(tmp_path):
    with Catalog(tmp_path) as cat:
        ids = cat.write_scanned([_row("a/1.jpg"), _row("a/2.jpg"), _row("b/3.jpg")])
        again = cat.write_scanned([_row("a/2.jpg", size_bytes=99), _row("c/4.jpg")])
        assert again[0] == ids[1]
        assert again[1] not in ids
        cat.mark_missing(["a/1.jpg"])
        cat.write_scanned([_row("d/5.jpg")])
        known = cat.known()
    assert known["a/2.jpg"].size_bytes == 99
    assert known["a/1.jpg"].status == "missing"  # rows are never deleted, so ids never reused
    assert len({k.id for k in known.values()}) == 5


def test_embeddings_are_float16_memmapped_rows_aligned_with_ids(tmp_path):
    rng = np.random.default_rng(0)
    with Catalog(tmp_path) as cat:
        rows = [_row(f"x/{i}.jpg") for i in range(5)]
        emb = rng.normal(size=(5, 8)).astype(np.float32)
        emb[2] = np.nan  # no embedding for this one
        ids = cat.write_scanned(rows, emb)
        m = cat.embeddings()
        assert isinstance(m, np.memmap) and m.dtype == np.float16
        np.testing.assert_allclose(m[ids[0]], emb[0], atol=1e-2)
        np.testing.assert_allclose(m[ids[4]], emb[4], atol=1e-2)
        has = cat.columns(["id", "has_embedding"])
        assert has["has_embedding"].tolist() == [1, 1, 0, 1, 1]


def test_embeddings_file_grows_in_place_and_keeps_earlier_rows(tmp_path):
    with Catalog(tmp_path) as cat:
        first = cat.write_scanned([_row("first.jpg")], np.ones((1, 4), np.float32))[0]
        rows = [_row(f"many/{i}.jpg") for i in range(2500)]  # past the initial 1024 rows
        ids = cat.write_scanned(rows, np.full((2500, 4), 0.5, np.float32))
        m = cat.embeddings()
        assert m.shape[0] > max(ids)
        assert m[first].tolist() == [1, 1, 1, 1]
        assert m[ids[-1]].tolist() == [0.5] * 4
    # The grown file is still a valid .npy for anyone else.
    assert np.load(tmp_path / "embeddings.npy").shape[1] == 4


def test_a_failed_batch_is_rolled_back_whole(tmp_path):
    with Catalog(tmp_path) as cat:
        cat.write_scanned([_row("a.jpg")], np.ones((1, 4), np.float32))
        with pytest.raises(ThresherError, match="4-d embeddings, not 6-d"):
            cat.write_scanned([_row("b.jpg"), _row("c.jpg")], np.ones((2, 6), np.float32))
        assert sorted(cat.known()) == ["a.jpg"]


def test_columns_come_back_as_numpy_arrays(tmp_path):
    with Catalog(tmp_path) as cat:
        cat.write_scanned(
            [_row("a.jpg", phash=-1, width=640), _row("b.jpg", status="corrupt", reason="bad")]
        )
        c = cat.columns(["path", "phash", "width", "status"])
        assert c["phash"].dtype == np.uint64 and c["phash"][0] == np.uint64(2**64 - 1)
        assert c["width"][0] == 640 and np.isnan(c["width"][1])
        assert c["status"].tolist() == ["ok", "corrupt"]
        with pytest.raises(ThresherError, match="unknown catalog column"):
            cat.columns(["path; DROP TABLE images"])


def test_a_catalog_from_a_newer_thresher_is_refused(tmp_path):
    with Catalog(tmp_path) as cat:
        cat.set_meta("schema_version", SCHEMA_VERSION + 1)
    with pytest.raises(ThresherError, match="newer than this thresher"):
        Catalog(tmp_path)


def test_opening_a_missing_catalog_for_reading_says_what_to_run(tmp_path):
    with pytest.raises(ThresherError, match="thresher scan"):
        Catalog(tmp_path / "nothing", create=False)


def test_an_older_catalog_gains_the_new_columns_and_keeps_its_rows(tmp_path):
    with Catalog(tmp_path) as cat:
        cat.write_scanned([_row("a.jpg", checksum="abc")])
    db = sqlite3.connect(tmp_path / "catalog.sqlite")
    db.execute("ALTER TABLE images DROP COLUMN pixel_checksum")  # as schema version 1 had it
    db.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    db.commit()
    db.close()
    with Catalog(tmp_path) as cat:
        assert cat.get_meta("schema_version") == SCHEMA_VERSION
        c = cat.columns(["path", "checksum", "pixel_checksum"])
    assert c["path"].tolist() == ["a.jpg"] and c["checksum"][0] == "abc"
    assert c["pixel_checksum"][0] is None
