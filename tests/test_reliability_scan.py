"""Issue 18, the scan and clean: bad names, special files, huge files, unreadable folders, a full
disk, killed parents. Every risky case runs in a subprocess under a resource limit."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest
from PIL import Image

from thresher.catalog import Catalog
from thresher.files import FileRefused, read_regular, readable_name
from thresher.scan.runner import scan

QUIET = {"progress": False, "log": lambda m: None, "embed": False}


def _limits(as_bytes: int | None = None, fsize: int | None = None, drop_dac: bool = False):
    """A preexec_fn: memory and file-size limits (SIGXFSZ ignored: writes fail with EFBIG)."""

    def apply():
        if as_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (as_bytes, as_bytes))
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        if drop_dac:  # root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH obeys permissions
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            for cap in (1, 2):
                if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                    raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")

    return apply


def _cli(*args, timeout=120, **limits):
    return subprocess.run(
        [sys.executable, "-m", "thresher.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limits(**limits),
    )


def _jpeg(path, colour=(200, 30, 40)):
    Image.new("RGB", (64, 48), colour).save(path, "JPEG")


# -- the read rule, in one place -------------------------------------------------------------------
def test_read_regular_refuses_fifos_devices_pseudo_files_and_oversized(tmp_path):
    fifo = tmp_path / "f.jpg"
    os.mkfifo(fifo)
    with pytest.raises(FileRefused, match="FIFO"):
        read_regular(fifo)  # returns at once: opened non-blocking, refused by fstat
    (tmp_path / "z.jpg").symlink_to("/dev/zero")
    with pytest.raises(FileRefused, match="device"):
        read_regular(tmp_path / "z.jpg")
    with pytest.raises(FileRefused, match="more bytes than its size") as e:
        read_regular("/proc/self/environ")
    assert e.value.status == "unreadable"
    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:
        f.truncate(3 * 2**30)  # sparse: 3 GB by stat, nothing on disk
    with pytest.raises(FileRefused) as e:
        read_regular(big, max_bytes=2**20)
    assert e.value.status == "oversized"
    (tmp_path / "ok.bin").write_bytes(b"abc")
    assert read_regular(tmp_path / "ok.bin") == b"abc"


# -- 1: a non-UTF-8 file name ----------------------------------------------------------------------
def test_a_non_utf8_file_name_is_stored_losslessly_and_a_rerun_resumes(crawl, tmp_path):
    raw = os.path.join(os.fsencode(crawl / "circle"), b"caf\xe9.jpg")
    _jpeg(raw)
    os.makedirs(os.path.join(os.fsencode(crawl), b"d\xf6g"))  # a class folder, too
    _jpeg(os.path.join(os.fsencode(crawl), b"d\xf6g", b"x.jpg"))
    ws = tmp_path / "ws"
    s = scan(crawl, ws, workers=0, **QUIET)
    assert s.statuses.get("ok", 0) >= 2
    with Catalog(ws) as cat:
        known = cat.known()
    name = os.fsdecode(b"circle/caf\xe9.jpg")
    assert known[name].status == "ok"  # the same str the file system gives back
    assert known[os.fsdecode(b"d\xf6g/x.jpg")].label == os.fsdecode(b"d\xf6g")
    assert readable_name(name) == "circle/caf\\xe9.jpg"
    again = scan(crawl, ws, workers=0, **QUIET)
    assert again.scanned == 0 and again.newly_missing == 0  # nothing redone, nothing lost


# -- 2, 6: special files and secrets never read after (or by) the scan ---------------------------
@pytest.mark.slow
def test_clean_report_reads_no_device_fifo_or_oversized_file(crawl, tmp_path):
    (crawl / "cross" / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(crawl / "cross" / "pipe.jpg")
    ws = tmp_path / "ws"
    scan(crawl, ws, workers=0, **QUIET)
    with Catalog(ws) as cat:
        known = cat.known()
    assert known["cross/zero.jpg"].status == "unreadable"
    assert known["cross/pipe.jpg"].status == "unreadable"
    # Files the scan accepted become a FIFO and a device after it: clean's report must not hang
    # on, or read without bound, either.
    ok = sorted(p for p, k in known.items() if k.status == "ok")
    (crawl / ok[0]).unlink()
    os.mkfifo(crawl / ok[0])
    (crawl / ok[1]).unlink()
    (crawl / ok[1]).symlink_to("/dev/zero")
    r = _cli("clean", "-w", ws, timeout=120, as_bytes=4 * 2**30)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (ws / "report.html").exists()


def test_manifest_rows_naming_secrets_leave_no_content_in_the_catalog(tmp_path):
    secret = tmp_path / "app.env"
    secret.write_text("FOO_SECRET=hunter2\n")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\n{secret},a\n/proc/self/environ,a\n/dev/zero,b\n")
    ws = tmp_path / "ws"
    scan(manifest, ws, workers=0, **QUIET)
    with Catalog(ws) as cat:
        c = cat.columns(["path", "status", "reason"])
    reasons = " ".join(str(r) for r in c["reason"])
    assert "hunter2" not in reasons and "FOO_SECRET" not in reasons
    by_path = dict(zip(c["path"], c["status"], strict=True))
    assert by_path["app.env"] == "not_image"  # relative to the manifest folder
    assert by_path["/proc/self/environ"] == "unreadable"
    assert by_path["/dev/zero"] == "unreadable"


# -- 3: a 3 GB file -------------------------------------------------------------------------------
def test_a_3gb_sparse_jpeg_is_oversized_under_a_memory_limit(crawl, tmp_path):
    with open(crawl / "circle" / "huge.jpg", "wb") as f:
        f.truncate(3 * 2**30)
    ws = tmp_path / "ws"
    r = _cli("scan", crawl, "-w", ws, "--workers", 0, "--no-embed", "-q", as_bytes=2 * 2**30)
    assert r.returncode == 0, r.stderr[-2000:]
    with Catalog(ws) as cat:
        row = cat.image(cat.known()["circle/huge.jpg"].id)
    assert row["status"] == "oversized" and "max_file_bytes" in row["reason"]


# -- 4: an unreadable sub-folder ------------------------------------------------------------------
def test_an_unreadable_sub_folder_is_counted_and_named(tmp_path):
    crawl = tmp_path / "crawl"
    (crawl / "circle").mkdir(parents=True)
    (crawl / "cross" / "locked").mkdir(parents=True)
    for i in range(2):
        _jpeg(crawl / "circle" / f"{i}.jpg")
        _jpeg(crawl / "cross" / "locked" / f"{i}.jpg")
    os.chmod(crawl / "cross" / "locked", 0o000)
    try:
        args = ("scan", crawl, "-w", tmp_path / "ws", "--workers", 0, "--no-embed", "-q")
        r = _cli(*args, drop_dac=os.geteuid() == 0)  # root reads any folder otherwise
        assert r.returncode == 0, r.stderr[-2000:]
        assert "1 folder(s) that cannot be listed (cross/locked)" in r.stderr
    finally:
        os.chmod(crawl / "cross" / "locked", 0o755)


# -- 5: a full disk, and workers that outlive their parent ----------------------------------------
def test_disk_full_is_one_line_and_a_rerun_goes_on(crawl, tmp_path):
    ws = tmp_path / "ws"
    args = ("scan", crawl, "-w", ws, "--workers", 0, "--no-embed", "-q", "--batch-size", 4)
    r = _cli(*args, fsize=96 * 1024)
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert "Traceback" not in r.stderr and last.startswith("error: disk full at")
    assert "files committed, nothing lost" in last and "rerun the same command" in last
    r = _cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    with Catalog(ws) as cat:
        resumed = cat.status_counts()
    assert resumed == scan(crawl, tmp_path / "fresh", workers=0, **QUIET).statuses


def test_embeddings_file_reserves_its_blocks_so_a_full_disk_is_an_error_not_sigbus(tmp_path):
    # The real full disk: a 1 MiB tmpfs (needs root to mount; skipped elsewhere).
    mnt = tmp_path / "small"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        code = (
            "import numpy as np, sys\n"
            "from thresher.catalog import Catalog\n"
            f"cat = Catalog({str(mnt / 'ws')!r})\n"
            "rows = [dict(path=f'{i}.jpg', status='ok') for i in range(3000)]\n"
            "try:\n"
            "    cat.write_scanned(rows, np.ones((3000, 1280), np.float32))\n"
            "except OSError as e:\n"
            "    print('OSError', e.errno); sys.exit(0)\n"
        )
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "OSError" in r.stdout, (r.returncode, r.stderr[-1500:])
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.slow
def test_scan_workers_die_with_a_killed_parent(crawl, tmp_path):
    import psutil

    for i in range(200):  # enough work that the pool is busy when the parent dies
        _jpeg(crawl / "circle" / f"extra{i}.jpg", (i, 2 * i % 255, 90))
    p = subprocess.Popen(
        [sys.executable, "-m", "thresher.cli", "scan", str(crawl), "-w", str(tmp_path / "ws"),
         "--workers", "2", "--no-embed", "-q", "--batch-size", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    parent = psutil.Process(p.pid)
    deadline = time.monotonic() + 120
    kids = []
    while time.monotonic() < deadline and len(kids) < 3 and p.poll() is None:
        kids = parent.children(recursive=True)
        time.sleep(0.2)
    assert len(kids) >= 2, "the pool never started"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    gone, alive = psutil.wait_procs(kids, timeout=30)
    for k in alive:
        k.kill()
    assert not alive, [k.cmdline()[-3:] for k in alive]


def test_special_entries_are_recorded_not_opened(tmp_path):
    root = tmp_path / "crawl"
    (root / "a").mkdir(parents=True)
    os.mkfifo(root / "a" / "p.jpg")
    _jpeg(root / "a" / "ok.jpg")
    s = scan(root, tmp_path / "ws", workers=0, **QUIET)
    assert s.statuses == {"ok": 1, "unreadable": 1}
    assert stat.S_ISFIFO(os.stat(root / "a" / "p.jpg").st_mode)


def test_a_non_utf8_name_goes_through_clean_review_and_export(crawl, tmp_path):
    from fastapi.testclient import TestClient

    from thresher.clean.findings import ACTIONS, clean
    from thresher.clean.report import html_report, write_issues
    from thresher.config import ExportPolicy
    from thresher.export import export
    from thresher.review.server import make_app

    circles = sorted((crawl / "circle").glob("img_*.jpg"))
    raw = os.path.join(os.fsencode(crawl / "circle"), b"caf\xe9.jpg")
    shutil.copy(circles[0], raw)  # a copy of another circle
    folder = os.path.join(os.fsencode(crawl), b"d\xf6g")  # a class whose name is not UTF-8,
    os.makedirs(folder)  # holding copies of a circle: clean's reasons quote both labels
    for i in range(3):
        shutil.copy(circles[1], os.path.join(folder, b"%d.jpg" % i))
    ws = tmp_path / "ws"
    scan(crawl, ws, workers=0, **QUIET)
    clean(ws, log=lambda m: None)
    report = html_report(ws).read_text()
    assert "caf\\xe9.jpg" in report and "d\\xf6g" in report
    write_issues(tmp_path / "issues.csv", ws)
    notes = []
    keep_all = ExportPolicy(actions={k: "keep" for k in ACTIONS})  # only the name can drop it
    s = export(ws, tmp_path / "out", keep_all, log=notes.append)
    assert s.dropped["file name not UTF-8"] == 4
    assert any("circle/caf\\xe9.jpg" in n and "rename" in n for n in notes)
    name = os.fsdecode(b"circle/caf\xe9.jpg")
    with Catalog(ws) as cat:
        image_id = cat.known()[name].id
    app = make_app(ws)
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        r = c.get(f"/api/items/{image_id}")
        assert r.status_code == 200 and r.json()["name"] == "caf\\xe9.jpg"
        assert c.get("/api/queue").status_code == 200
        # Every file of the class whose name is not UTF-8 (its labels, reasons, choices and
        # group members quote that class) is served with the label as stored.
        dog = os.fsdecode(b"d\xf6g")
        with Catalog(ws) as cat:
            dog_ids = [k.id for n, k in cat.known().items() if n.startswith(dog + "/")]
        assert len(dog_ids) == 3
        for i in dog_ids:
            r = c.get(f"/api/items/{i}")
            assert r.status_code == 200, r.text
            assert r.json()["label"] == "d\\xf6g"  # shown readably, as the file name is
    app.state.catalog.close()
