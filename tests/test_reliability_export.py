"""Issue 18, export: labels that would escape --out, a full disk mid-export, a bad --out, files
that vanished since the scan."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from thresher.catalog import Catalog
from thresher.errors import ThresherError
from thresher.export import export


def _cli(*args, fsize=None):
    def limit():
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(
        [sys.executable, "-m", "thresher.cli", *map(str, args)],
        capture_output=True, text=True, timeout=120, preexec_fn=limit,
    )  # fmt: skip


def _queued_id(ws):
    with Catalog(ws) as cat:
        return cat.review_queue()[0][0]


@pytest.mark.parametrize("bad", ["../../../../pwned", "..", ".", "a/b", "x\ny", " "])
def test_a_label_that_is_not_a_folder_name_never_reaches_the_disk(cleaned_copy, tmp_path, bad):
    with Catalog(cleaned_copy) as cat:  # a catalog written by an older thresher, say
        cat.decide(_queued_id(cleaned_copy), "relabel", bad)
    with pytest.raises(ThresherError, match="relabel it in `thresher review`"):
        export(cleaned_copy, tmp_path / "a" / "out", link="symlink", log=lambda m: None)
    assert not (tmp_path / "a" / "out").exists()
    assert not list(tmp_path.rglob("pwned*"))


def test_disk_full_mid_export_leaves_the_previous_export_whole(cleaned_copy, tmp_path):
    # A real full disk: a 256 KiB tmpfs (mounting needs root; skipped elsewhere).
    mnt = tmp_path / "small"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        out = mnt / "out"
        assert _cli("export", "-w", cleaned_copy, "--out", out).returncode == 0
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        # Fill the disk, then free two pages.
        with open(mnt / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        with open(mnt / "filler", "r+b") as f:
            f.truncate(os.path.getsize(mnt / "filler") - 2 * 4096)
        r = _cli("export", "-w", cleaned_copy, "--out", out, "--seed", 7)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error: cannot write the export at") and "untouched" in last
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # all old, agreeing
        assert sorted(p.name for p in mnt.iterdir()) == ["filler", "out"]  # no leftovers
        (mnt / "filler").unlink()
        assert _cli("export", "-w", cleaned_copy, "--out", out, "--seed", 7).returncode == 0
        doc = json.loads((out / "export.json").read_text())
        m = pq.read_table(out / "manifest.parquet").to_pydict()
        assert doc["policy"]["seed"] == 7 and doc["exported"] == len(m["path"])
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_out_at_a_file_or_in_proc_is_one_line(cleaned_copy, tmp_path):
    (tmp_path / "f").write_text("x")
    for out, words in ((tmp_path / "f", "is a file"), ("/proc/thresher-out", "cannot write")):
        r = _cli("export", "-w", cleaned_copy, "--out", out)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    r = _cli("export", "-w", cleaned_copy, "--out", tmp_path / "mine")
    assert r.returncode == 2 and "did not write (notes.txt)" in r.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_files_vanished_since_the_scan_are_named_not_exported(cleaned_copy, tmp_path):
    with Catalog(cleaned_copy) as cat:
        source = cat.get_meta("source")
        crawl = tmp_path / "crawl"
        shutil.copytree(source["root"], crawl, symlinks=True)
        cat.set_meta("source", {**source, "root": str(crawl)})
        c = cat.columns(["path", "status"], where="status = 'ok'")
    gone = sorted(c["path"])[:2]
    for p in gone:
        (crawl / p).unlink()
    notes = []
    s = export(cleaned_copy, tmp_path / "out", log=notes.append)
    assert s.dropped.get("vanished since the scan") == 2
    assert any("2 file(s): vanished since the scan" in n for n in notes)
    paths = pq.read_table(tmp_path / "out" / "manifest.parquet").column("path").to_pylist()
    assert not any(p.endswith(tuple(gone)) for p in paths)


def test_a_hardlink_across_file_systems_leaves_no_half_written_folder(cleaned_copy, tmp_path):
    # The workspace's files live on the disk; /dev/shm is another file system (tmpfs).
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the tests' tmp folder")
    out_parent = Path(tempfile.mkdtemp(dir=shm))
    try:
        with pytest.raises(ThresherError, match="another file system"):
            export(cleaned_copy, out_parent / "out", link="hardlink", log=lambda m: None)
        assert list(out_parent.iterdir()) == []  # neither OUT nor its temporary folder
    finally:
        shutil.rmtree(out_parent, ignore_errors=True)
