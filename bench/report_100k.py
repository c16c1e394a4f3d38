"""The clean report at 100,000 findings: generation time, file size, and time to first page.

A synthetic catalog (no pixels: the thumbnails of the galleries then fall back to a blank box,
so this measures the findings table, the part that grows with the catalog) of 100,000 files
with one issue each, in 40 classes; `html_report` writes it; Chromium opens it and times the
first page of the findings table.

    PYTHONPATH=. python bench/report_100k.py [--rows 100000]

Writes bench/report_100k.md.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from thresher.catalog import Catalog
from thresher.clean.report import html_report
from thresher.issue_model import ACTIONS

HERE = Path(__file__).parent


def synthetic_workspace(ws: Path, n: int, seed: int = 0) -> None:
    """A catalog of n files with one issue each, as clean would have stored it."""
    rng = np.random.default_rng(seed)
    kinds = [k for k in ACTIONS if k not in ("oversized", "broken_symlink")]
    with Catalog(ws) as cat:
        cat.set_meta("source", {"root": str(ws / "nowhere")})
    db = sqlite3.connect(ws / "catalog.sqlite")
    labels = [f"class_{i:02d}" for i in range(40)]
    lab = rng.integers(0, 40, n)
    kind = rng.integers(0, len(kinds), n)
    with db:
        db.executemany(
            "INSERT INTO images(id, path, label, size_bytes, mtime_ns, status, reason) "
            "VALUES(?, ?, ?, 1000, 0, ?, ?)",
            (
                (
                    i,
                    f"{labels[lab[i]]}/img_{i:07d}.jpg",
                    labels[lab[i]],
                    "corrupt" if kinds[kind[i]] == "corrupt" else "ok",
                    "decode failed: truncated" if kinds[kind[i]] == "corrupt" else None,
                )
                for i in range(n)
            ),
        )
        db.executemany(
            "INSERT INTO issues(image_id, issue, confidence, grp, keep, suggested_label, review,"
            " reason) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    i,
                    kinds[kind[i]],
                    float(rng.random()),
                    i // 3 if "duplicate" in kinds[kind[i]] else None,
                    int(i % 3 == 0),
                    labels[(lab[i] + 1) % 40] if "label" in kinds[kind[i]] else None,
                    0,
                    f"short side {200 + i % 300} px < 512"
                    if kinds[kind[i]] == "low_resolution"
                    else None,
                )
                for i in range(n)
            ),
        )
    counts = {k: int((np.array(kinds)[kind] == k).sum()) for k in kinds}
    summary = {
        "files": n,
        "flagged": n,
        "review": 0,
        "by_issue": counts,
        "duplicate_groups": n // 3,
        "counts_before": {x: int((lab == j).sum()) for j, x in enumerate(labels)},
        "counts_after": {x: int((lab == j).sum()) for j, x in enumerate(labels)},
    }
    with Catalog(ws) as cat:
        cat.set_meta("clean_summary", summary)


def first_page_seconds(report: Path) -> tuple[float, str]:
    """Seconds from navigation to the first page of findings in Chromium, and its 'showing'."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page()
        t0 = time.perf_counter()
        page.goto(report.as_uri())
        page.locator("#findings tbody tr").first.wait_for(timeout=120_000)
        took = time.perf_counter() - t0
        shown = page.locator("#shown").inner_text()
        browser.close()
    return took, shown


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        synthetic_workspace(ws, a.rows)
        t0 = time.perf_counter()
        report = html_report(ws)
        gen = time.perf_counter() - t0
        size = report.stat().st_size
        opened, shown = first_page_seconds(report)
    text = (
        f"# The clean report at {a.rows:,} findings\n\n"
        f"Command: `PYTHONPATH=. python bench/report_100k.py --rows {a.rows}` (2 shared cores).\n\n"
        "| findings | generate (s) | report.html (MB) | Chromium to first page (s) "
        "| first page says |\n"
        "|---:|---:|---:|---:|---|\n"
        f"| {a.rows:,} | {gen:.1f} | {size / 1e6:.2f} | {opened:.1f} | {shown} |\n\n"
        "Synthetic rows (no pixels, so no gallery thumbnails: the galleries add at most "
        "24 thumbnails per issue and 20 groups, about 5 KB each, whatever the catalog size).\n"
    )
    (HERE / "report_100k.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
