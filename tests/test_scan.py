"""The scan end to end: every planted problem recorded, incremental, and resumable after SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from thresher.catalog import Catalog
from thresher.errors import ThresherError
from thresher.scan.runner import scan


def _catalog_rows(ws):
    db = sqlite3.connect(ws / "catalog.sqlite")
    rows = db.execute(
        "SELECT path, label, status, checksum, width, height, phash, dhash, effective_short_side "
        "FROM images ORDER BY path"
    ).fetchall()
    db.close()
    return rows


def test_scan_records_every_planted_status_with_relative_paths(crawl, truth, tmp_path):
    s = scan(crawl, tmp_path / "ws", workers=2, embed=False, progress=False, log=lambda m: None)
    assert s.files == len(truth) and not s.interrupted
    with Catalog(tmp_path / "ws") as cat:
        c = cat.columns(["path", "label", "status", "width", "height", "phash", "checksum"])
    got = dict(zip(c["path"], c["status"], strict=True))
    assert got == {t.path: t.status for t in truth}
    labels = dict(zip(c["path"], c["label"], strict=True))
    assert all(labels[t.path] == t.folder_label for t in truth)
    ok = c["status"] == "ok"
    assert not np.isnan(c["width"][ok]).any() and (c["phash"][ok] != 0).all()
    sizes = {t.path: t.native_short for t in truth if t.status == "ok"}
    for p, w, h in zip(c["path"][ok], c["width"][ok], c["height"][ok], strict=True):
        assert min(w, h) == sizes[p]  # real sizes, although decoded in draft mode
    assert all("\\" not in p and not p.startswith("/") for p in c["path"])
    assert s.skipped_extensions == {".txt": 1}


def test_rescan_of_an_unchanged_tree_does_nothing(crawl, tmp_path):
    ws = tmp_path / "ws"
    scan(crawl, ws, workers=0, embed=False, progress=False, log=lambda m: None)
    before = _catalog_rows(ws)
    s = scan(crawl, ws, workers=0, embed=False, progress=False, log=lambda m: None)
    assert s.scanned == 0 and s.newly_missing == 0
    assert s.unchanged + s.aliases == s.files
    assert _catalog_rows(ws) == before


def test_rescan_picks_up_new_changed_and_vanished_files(crawl, tmp_path):
    ws = tmp_path / "ws"
    scan(crawl, ws, workers=0, embed=False, progress=False, log=lambda m: None)
    with Catalog(ws) as cat:
        before = cat.known()
    changed = next(p for p, k in before.items() if k.status == "ok" and p.endswith(".jpg"))
    Image.new("RGB", (700, 700), (1, 2, 3)).save(crawl / changed, "JPEG")
    Image.new("RGB", (800, 600), (9, 9, 9)).save(crawl / "circle" / "new_one.png")
    gone = next(p for p, k in before.items() if k.status == "ok" and p != changed)
    (crawl / gone).unlink()

    s = scan(crawl, ws, workers=0, embed=False, progress=False, log=lambda m: None)
    assert s.scanned == 2 and s.newly_missing == 1
    with Catalog(ws) as cat:
        after = cat.known()
        c = cat.columns(["path", "width", "std_r"])
    assert after[changed].id == before[changed].id  # same image, same id
    assert after["circle/new_one.png"].status == "ok"
    assert after[gone].status == "missing"
    i = list(c["path"]).index(changed)
    assert c["width"][i] == 700 and c["std_r"][i] == 0


def test_a_workspace_refuses_a_second_source(crawl, tmp_path):
    ws = tmp_path / "ws"
    scan(crawl / "star", ws, workers=0, embed=False, progress=False, log=lambda m: None)
    with pytest.raises(ThresherError, match="already catalogues"):
        scan(crawl / "circle", ws, workers=0, embed=False, progress=False, log=lambda m: None)


def test_manifest_source_scans_the_same_measurements(crawl, tmp_path):
    ws_tree = tmp_path / "tree"
    scan(crawl / "square", ws_tree, workers=0, embed=False, progress=False, log=lambda m: None)
    files = sorted(p.name for p in (crawl / "square").iterdir() if p.suffix in (".jpg", ".png"))
    (crawl / "manifest.csv").write_text("path,label\n" + "".join(f"square/{f},sq\n" for f in files))
    ws_man = tmp_path / "man"
    scan(crawl / "manifest.csv", ws_man, workers=0, embed=False, progress=False, log=lambda m: None)
    tree = {r[0]: r[2:] for r in _catalog_rows(ws_tree)}
    man = {r[0].removeprefix("square/"): r[2:] for r in _catalog_rows(ws_man)}
    assert man == tree
    assert {r[1] for r in _catalog_rows(ws_man)} == {"sq"}


@pytest.mark.slow
def test_scan_killed_with_sigkill_resumes_without_redoing_committed_work(crawl, tmp_path):
    ws = tmp_path / "ws"
    cmd = [
        sys.executable,
        "-m",
        "thresher.cli",
        "scan",
        str(crawl),
        "-w",
        str(ws),
        "--workers",
        "1",
        "--batch-size",
        "4",
        "--no-embed",
        "--quiet",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    committed = 0
    deadline = time.monotonic() + 120
    while committed < 12 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        if (ws / "catalog.sqlite").exists():
            try:
                db = sqlite3.connect(ws / "catalog.sqlite", timeout=1)
                committed = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
                db.close()
            except sqlite3.OperationalError:
                pass  # schema not created yet
    assert proc.poll() is None, f"scan ended before it could be killed: {proc.stderr.read()}"
    os.killpg(proc.pid, signal.SIGKILL)  # the scan and its worker processes, mid-batch
    proc.wait()

    db = sqlite3.connect(ws / "catalog.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n_killed = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    db.close()
    assert n_killed >= 12

    s = scan(crawl, ws, workers=1, embed=False, progress=False, log=lambda m: None)
    assert s.unchanged == n_killed  # nothing committed before the kill is redone
    assert s.unchanged + s.scanned + s.aliases == s.files

    reference = tmp_path / "reference"
    scan(crawl, reference, workers=0, embed=False, progress=False, log=lambda m: None)
    assert _catalog_rows(ws) == _catalog_rows(reference)


def test_ctrl_c_mid_scan_keeps_committed_batches(crawl, tmp_path, monkeypatch):
    """KeyboardInterrupt inside the loop: committed batches stay, the summary says so."""
    import thresher.scan.runner as runner

    real = runner.measure_files
    calls = {"n": 0}

    def interrupt_on_third(*a):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(runner, "measure_files", interrupt_on_third)
    from thresher.config import ScanConfig

    notes = []
    s = scan(
        crawl,
        tmp_path / "ws",
        workers=0,
        embed=False,
        progress=False,
        config=ScanConfig(batch_size=5),
        log=notes.append,
    )
    assert s.interrupted and s.statuses["ok"] == 10  # two batches of five made it
    assert any("resume" in n for n in notes)
    monkeypatch.setattr(runner, "measure_files", real)
    s2 = scan(crawl, tmp_path / "ws", workers=0, embed=False, progress=False, log=notes.append)
    assert s2.unchanged == sum(s.statuses.values()) and not s2.interrupted


def test_a_fifo_posing_as_an_image_is_recorded_not_read(crawl, tmp_path):
    os.mkfifo(crawl / "circle" / "pipe.jpg")  # opening it for reading would block forever
    s = scan(crawl, tmp_path / "ws", workers=0, embed=False, progress=False, log=lambda m: None)
    with Catalog(tmp_path / "ws") as cat:
        k = cat.known()["circle/pipe.jpg"]
        c = cat.columns(["path", "reason"], where="status = 'unreadable'")
    assert k.status == "unreadable"
    assert c["path"].tolist() == ["circle/pipe.jpg"] and "not a regular file" in c["reason"][0]
    again = scan(crawl, tmp_path / "ws", workers=0, embed=False, progress=False, log=lambda m: None)
    assert again.scanned == 0 and s.statuses["unreadable"] == 1


def test_a_relabelled_manifest_row_updates_the_label_without_a_rescan(crawl, tmp_path):
    files = sorted(p.name for p in (crawl / "star").iterdir() if p.suffix == ".jpg")[:3]
    manifest = crawl / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"star/{f},star\n" for f in files))
    ws = tmp_path / "ws"
    scan(manifest, ws, workers=0, embed=False, progress=False, log=lambda m: None)
    manifest.write_text(
        "path,label\n"
        + "".join(f"star/{f},{'cross' if i == 0 else 'star'}\n" for i, f in enumerate(files))
    )
    s = scan(manifest, ws, workers=0, embed=False, progress=False, log=lambda m: None)
    assert s.scanned == 0 and s.relabelled == 1
    with Catalog(ws) as cat:
        assert cat.known()[f"star/{files[0]}"].label == "cross"


def test_raising_a_limit_rescans_the_files_it_made_oversized(tmp_path):
    from thresher.config import ScanConfig

    src = tmp_path / "src" / "cats"
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, side in (("small.png", 32), ("big.png", 256)):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(src / name)
    big = (src / "big.png").stat().st_size
    ws, quiet = tmp_path / "ws", dict(workers=0, embed=False, progress=False, log=lambda m: None)
    scan(src.parent, ws, config=ScanConfig(max_file_bytes=big - 1), **quiet)
    with Catalog(ws, create=False) as cat:
        assert cat.status_counts() == {"ok": 1, "oversized": 1}
    s = scan(src.parent, ws, config=ScanConfig(max_file_bytes=big - 1), **quiet)
    assert s.scanned == 0  # the same limits: nothing to judge again
    s = scan(src.parent, ws, config=ScanConfig(max_file_bytes=big + 1), **quiet)
    assert s.scanned == 1
    with Catalog(ws, create=False) as cat:
        assert cat.status_counts() == {"ok": 2}
