"""`thresher clean` and `thresher issues`: the issue table, its public columns, the report."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from thresher.catalog import Catalog
from thresher.clean.findings import clean
from thresher.clean.report import ISSUE_TABLE_COLUMNS, html_report, write_issues
from thresher.errors import ThresherError
from thresher.scan.runner import scan


@pytest.fixture(scope="module")
def cleaned(cleaned_pristine, tmp_path_factory):
    """A copy of the cleaned demo workspace for this module (one test re-cleans it)."""
    import shutil

    ws = tmp_path_factory.mktemp("clean") / "ws"
    shutil.copytree(cleaned_pristine[0], ws)
    return ws, cleaned_pristine[1]


def test_issue_table_has_exactly_the_public_columns(cleaned, tmp_path):
    ws, summary = cleaned
    n = write_issues(tmp_path / "issues.csv", ws)
    csv = pacsv.read_csv(tmp_path / "issues.csv")
    assert tuple(csv.column_names) == ISSUE_TABLE_COLUMNS
    assert csv.num_rows == n > 0
    write_issues(tmp_path / "issues.parquet", ws)
    par = pq.read_table(tmp_path / "issues.parquet")
    assert tuple(par.column_names) == ISSUE_TABLE_COLUMNS
    t = par.to_pydict()
    assert all(0.0 <= c <= 1.0 for c in t["confidence"])
    assert all("\\\\" not in p and not p.startswith("/") for p in t["path"])


def test_every_duplicate_group_member_has_a_row_and_one_is_kept(cleaned, truth):
    ws, _ = cleaned
    t = pq.read_table(write_issues_tmp(ws)).to_pydict()
    groups = {}
    for path, issue, group, keep in zip(t["path"], t["issue"], t["group"], t["keep"], strict=True):
        if issue in ("exact_duplicate", "near_duplicate"):
            groups.setdefault(group, []).append((path, keep))
    assert groups
    for members in groups.values():
        assert len(members) >= 2 and sum(k for _, k in members) == 1
    planted = {t_.path for t_ in truth if t_.group >= 0}
    found = {p for members in groups.values() for p, _ in members}
    assert found == planted


def write_issues_tmp(ws):
    out = ws / "issues-test.parquet"
    write_issues(out, ws)
    return out


def test_the_csv_the_table_and_the_report_count_kept_copies_alike(cleaned, tmp_path, capsys):
    """Clean counts the copies that leave the data; the CSV has the kept copies too, says so
    in its keep and action columns, and clean's table and report.html give both counts."""
    from thresher.clean.report import kept_copies_note
    from thresher.cli import _print_clean

    ws, summary = cleaned
    write_issues(tmp_path / "issues.csv", ws)
    t = pacsv.read_csv(tmp_path / "issues.csv").to_pydict()
    rows = list(zip(t["issue"], t["keep"], t["action"], strict=True))
    assert summary.kept.get("near_duplicate", 0) > 0  # the demo plants copies
    for kind in ("exact_duplicate", "near_duplicate", "near_duplicate_edit"):
        copies = [a for i, k, a in rows if i == kind and not k]
        kept = [a for i, k, a in rows if i == kind and k]
        assert len(copies) == summary.by_issue.get(kind, 0)
        assert len(kept) == summary.kept.get(kind, 0)
        assert set(kept) <= {"keep (the kept copy)"}
    assert {a for i, k, a in rows if i == "near_duplicate" and not k} == {"drop (a copy)"}
    note = kept_copies_note(summary.by_issue, summary.kept)
    n, k = summary.by_issue["near_duplicate"], summary.kept["near_duplicate"]
    assert f"near_duplicate {n} + {k} kept = {n + k}" in note
    assert n + k == sum(i == "near_duplicate" for i, _, _ in rows)
    _print_clean(summary)
    printed = capsys.readouterr().out
    assert f"near_duplicate {n} + {k} kept = {n + k}" in printed.replace("\n", " ")
    page = html_report(ws, tmp_path / "r.html").read_text()
    assert "<th>kept copies</th>" in page and f"near_duplicate {n} + {k} kept = {n + k}" in page


def test_find_issues_reports_each_detector_in_order(cleaned):
    from thresher.clean.findings import DETECTORS, detector_inputs, find_issues
    from thresher.config import CleanThresholds

    ws, summary = cleaned
    calls = []
    with Catalog(ws, create=False) as cat:
        c, mm = detector_inputs(cat)
        _, s = find_issues(c, mm, CleanThresholds(), log=lambda m: None,
                           progress=lambda *a: calls.append(a))  # fmt: skip
    names = ["unusable", "quality", "duplicates", "label errors"]
    assert len(DETECTORS) == len(names)
    assert calls == [(k, len(names), name) for k, name in enumerate(names)]
    assert s.by_issue == summary.by_issue  # reporting changes nothing


def test_label_errors_come_with_the_true_label_suggested(cleaned, truth):
    ws, summary = cleaned
    t = pq.read_table(write_issues_tmp(ws)).to_pydict()
    by_path = {x.path: x for x in truth}
    flagged = [
        (p, s)
        for p, i, s in zip(t["path"], t["issue"], t["suggested_label"], strict=True)
        if i == "label_error"
    ]
    wrong = {x.path for x in truth if x.wrong_label}
    hits = [(p, s) for p, s in flagged if p in wrong]
    assert len(hits) >= 0.75 * len(wrong)
    assert len(flagged) - len(hits) <= max(2, 0.25 * len(flagged))  # few false alarms
    assert sum(by_path[p].true_label == s for p, s in hits) >= 0.9 * len(hits)


def test_review_queue_is_the_configured_share_of_files(cleaned):
    ws, summary = cleaned
    t = pq.read_table(write_issues_tmp(ws)).to_pydict()
    queued = {p for p, r in zip(t["path"], t["review"], strict=True) if r}
    assert len(queued) == summary.review
    assert abs(summary.review - round(0.08 * summary.files)) <= 1
    # Rules settle the obvious: no unreadable file, no byte copy is sent to a person.
    obvious = {
        p
        for p, i in zip(t["path"], t["issue"], strict=True)
        if i in ("corrupt", "empty", "not_image", "oversized", "exact_duplicate")
    }
    assert not queued & obvious


def test_summary_counts_and_balancing_plan(cleaned):
    _, s = cleaned
    assert 0 < s.flagged < s.files and s.flagged_share == pytest.approx(s.flagged / s.files)
    assert s.imbalance_before > 2 and s.counts_before["circle"] > s.counts_before["cross"]
    assert s.plan["cross"] > 1.0 and s.plan[max(s.counts_after, key=s.counts_after.get)] == 1.0
    assert max(s.plan.values()) <= 3.0


def test_html_report_is_self_contained(cleaned):
    ws, _ = cleaned
    html = html_report(ws).read_text()
    assert html.count("data:image/jpeg;base64,") >= 20
    assert "Duplicate groups" in html and "Classes before and after cleaning" in html
    assert "http://" not in html and "https://" not in html  # opens from disk, offline


def test_clean_without_embeddings_says_what_it_skipped(demo_dir, tmp_path):
    ws = tmp_path / "ws"
    scan(demo_dir / "crawl", ws, workers=0, embed=False, progress=False, log=lambda m: None)
    notes = []
    s = clean(ws, log=notes.append)
    assert any("label-error" in n for n in notes)
    assert "label_error" not in s.by_issue and s.by_issue["low_resolution"] > 0


def _clean_cli(ws, config, *extra):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "thresher.cli",
            "clean",
            "-w",
            str(ws),
            "--config",
            str(config),
            *extra,
        ],
        capture_output=True,
        text=True,
    )


def test_issues_and_clean_errors_are_one_line(tmp_path, cleaned):
    ws, _ = cleaned
    with pytest.raises(ThresherError, match=r"\.csv or \.parquet"):
        write_issues(tmp_path / "x.txt", ws)
    empty = tmp_path / "empty"
    scan(tmp_path, empty, workers=0, embed=False, progress=False, log=lambda m: None)
    with pytest.raises(ThresherError, match="run `thresher clean` first"):
        write_issues(tmp_path / "x.csv", empty)
    (tmp_path / "bad.yaml").write_text("min_short_side: 300\n")
    r = _clean_cli(ws, tmp_path / "bad.yaml")
    assert r.returncode == 2 and 'unknown key "min_short_side"' in r.stderr
    assert "Traceback" not in r.stderr


def test_a_stricter_threshold_from_yaml_flags_more(cleaned, tmp_path):
    ws, base = cleaned
    (tmp_path / "strict.yaml").write_text("min_short_side_px: 900\n")
    r = _clean_cli(ws, tmp_path / "strict.yaml", "--no-report")
    assert r.returncode == 0, r.stderr
    assert "low_resolution" in r.stdout
    from thresher.catalog import Catalog

    with Catalog(ws) as cat:
        strict = cat.get_meta("clean_summary")
    assert strict["by_issue"]["low_resolution"] > base.by_issue["low_resolution"]
    clean(ws, log=lambda m: None)  # restore the default result for the other tests


def test_same_pixels_in_other_bytes_are_exact_duplicates(tmp_path):
    from PIL import Image

    from thresher.demo import draw_object

    root = tmp_path / "crawl" / "circle"
    root.mkdir(parents=True)
    im = draw_object("circle", 700, 600, np.random.default_rng(0))
    im.save(root / "a.png")
    im.save(root / "b.bmp")  # same pixels, other bytes
    im.save(root / "c.png", compress_level=1)  # same pixels, other PNG bytes
    draw_object("circle", 700, 600, np.random.default_rng(1)).save(root / "other.png")
    Image.new("RGB", (600, 600), (9, 9, 9)).save(root / "blank.png")
    ws = tmp_path / "ws"
    scan(tmp_path / "crawl", ws, workers=0, embed=False, progress=False, log=lambda m: None)
    with Catalog(ws) as cat:
        c = cat.columns(["path", "checksum", "pixel_checksum"])
    sums = dict(zip(c["path"], c["pixel_checksum"], strict=True))
    assert sums["circle/a.png"] == sums["circle/b.bmp"] == sums["circle/c.png"]
    assert sums["circle/other.png"] != sums["circle/a.png"]
    assert len(set(c["checksum"])) == 5  # the bytes all differ
    clean(ws, log=lambda m: None)
    t = pq.read_table(write_issues_tmp(ws)).to_pydict()
    exact = {p for p, i in zip(t["path"], t["issue"], strict=True) if i == "exact_duplicate"}
    assert exact == {"circle/a.png", "circle/b.bmp", "circle/c.png"}


def _report_data(html: str) -> dict:
    import base64
    import gzip
    import json
    import re

    packed = re.search(r"<script type=application/octet-stream id=data>([^<]*)</script>", html)
    return json.loads(gzip.decompress(base64.b64decode(packed.group(1))))


def test_html_report_holds_every_finding_with_its_action_and_reason(cleaned):
    from thresher.catalog import Catalog

    ws, _ = cleaned
    html = html_report(ws).read_text()
    d = _report_data(html)
    with Catalog(ws, create=False) as cat:
        rows = cat.issues()
    cols, t = d["cols"], d["tables"]
    assert len(cols["id"]) == len(rows)  # every finding, not the first few per issue
    kinds = [t["issue"][i] for i in cols["issue"]]
    assert sorted(kinds) == sorted(r.issue for r in rows)
    pairs = {
        (t["issue"][i], t["action"][a]) for i, a in zip(cols["issue"], cols["action"], strict=True)
    }
    actions = dict(pairs)
    assert actions["corrupt"] == "drop"
    # near_duplicate keeps one (the made copies are sure on the real bench): both sides shown
    near = {a for k, a in pairs if k == "near_duplicate"}
    assert near == {"keep (the kept copy)", "drop (a copy)"}
    corrupt = [
        t["reason"][r]
        for i, r in zip(cols["issue"], cols["reason"], strict=True)
        if t["issue"][i] == "corrupt"
    ]
    assert corrupt and all(x.startswith("decode failed") for x in corrupt)  # the stored why
    for word in ("showing", "f-issue", "f-label", "precision on real images"):
        assert word in html
