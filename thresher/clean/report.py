"""What clean found, for people and for programs: the issue table (CSV/Parquet) and an HTML report.

The issue table is a public interface (documented in the README): one row per (file, issue),
exactly the columns of ISSUE_TABLE_COLUMNS.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
from importlib import resources
from pathlib import Path

from thresher.catalog import Catalog
from thresher.config import DEFAULT_WORKSPACE
from thresher.errors import ThresherError
from thresher.files import readable_name
from thresher.issue_model import ACTIONS, BENCH_PRECISION, DUPLICATE_KINDS

ISSUE_TABLE_COLUMNS = (
    "path",
    "label",
    "issue",
    "confidence",
    "group",
    "keep",
    "suggested_label",
    "review",
    "decision",
    "decided_label",
    "action",
)


def issue_table(workspace: Path | str = DEFAULT_WORKSPACE):
    """The issue table as a pyarrow Table (run `thresher clean` first)."""
    import pyarrow as pa

    with Catalog(workspace, create=False) as cat:
        if cat.get_meta("clean_summary") is None:
            raise ThresherError(f"no issues in {workspace} yet: run `thresher clean` first")
        rows = cat.issues()

    def col(name):
        return [getattr(r, name) for r in rows]

    return pa.table(
        {
            "path": pa.array([readable_name(p) for p in col("path")], pa.string()),
            "label": pa.array([x and readable_name(x) for x in col("label")], pa.string()),
            "issue": pa.array(col("issue"), pa.string()),
            "confidence": pa.array(col("confidence"), pa.float64()),
            "group": pa.array([-1 if g is None else g for g in col("grp")], pa.int64()),
            "keep": pa.array([bool(k) for k in col("keep")], pa.bool_()),
            "suggested_label": pa.array(
                [x and readable_name(x) for x in col("suggested_label")], pa.string()
            ),
            "review": pa.array([bool(r) for r in col("review")], pa.bool_()),
            "decision": pa.array(col("decision"), pa.string()),  # a person's (thresher review)
            "decided_label": pa.array(col("decided_label"), pa.string()),
            # What export does with the row, in report.html's words: a duplicate kind's row
            # for the kept copy says "keep (the kept copy)", the copies "drop (a copy)".
            "action": pa.array(
                [finding_action(r.issue, bool(r.keep), r.decision, r.decided_label) for r in rows],
                pa.string(),
            ),
        }
    )


def write_issues(out: Path | str, workspace: Path | str = DEFAULT_WORKSPACE) -> int:
    """Write the issue table to OUT (.csv or .parquet); return the number of rows."""
    out = Path(out)
    table = issue_table(workspace)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ThresherError(f"--out must end in .csv or .parquet, not {out.name!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, out)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, out)
    return table.num_rows


def finding_action(issue: str, keep: bool, decision: str | None, label: str | None) -> str:
    """What export does with one finding, in words: a person's decision, else the default."""
    if decision:
        return f"decided: relabel to {label}" if decision == "relabel" else f"decided: {decision}"
    action = ACTIONS[issue]
    if action == "keep one":
        return "keep (the kept copy)" if keep else "drop (a copy)"
    return {"review": "review (kept until decided)"}.get(action, action)


def kept_copies_note(by_issue: dict[str, int], kept: dict[str, int]) -> str | None:
    """One line: why the issue table has more rows of a duplicate kind than clean counts files.

    Clean counts the copies that leave the data; the issue table has a row for every member
    of a group, its kept copy included (action "keep (the kept copy)").
    """
    parts = [
        f"{kind} {by_issue.get(kind, 0)} + {n} kept = {by_issue.get(kind, 0) + n}"
        for kind, n in kept.items()
        if n
    ]
    if not parts:
        return None
    return (
        "files counts the copies that leave the data; the issue table (`thresher issues`, "
        "report.html's findings) also has a row for each group's kept copy: " + ", ".join(parts)
    )


def html_report(
    workspace: Path | str = DEFAULT_WORKSPACE,
    out: Path | str | None = None,
    per_issue: int = 24,
    groups: int = 20,
    progress=None,
) -> Path:
    """A self-contained HTML report of the last clean, every finding browsable; returns its path.

    One file that opens offline and stays small at 100,000 findings: the findings travel as
    gzipped, column-wise JSON that a small inline script pages and filters (by issue and
    class); thumbnails are inline only for the `per_issue` surest findings of each issue, the
    rest load lazily from the files themselves (on the machine that holds them). `progress`,
    if given, is called with (done, total) as the thumbnails are made.
    """
    from thresher.images import thumbnail_jpeg

    workspace = Path(workspace)
    out = Path(out) if out else workspace / "report.html"
    with Catalog(workspace, create=False) as cat:
        summary = cat.get_meta("clean_summary")
        source = cat.get_meta("source")
        if summary is None:
            raise ThresherError(f"no issues in {workspace} yet: run `thresher clean` first")
        rows = cat.issues()
        scanned = cat.columns(["id", "reason"], where="status != 'ok'")
    root = Path(source["root"])
    scan_reason = dict(zip(scanned["id"].tolist(), scanned["reason"].tolist(), strict=True))

    def thumb(path: str) -> str | None:
        jpeg = thumbnail_jpeg(root / path, 256, quality=80)
        if jpeg is None:
            return None
        return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()

    # Column-wise, with repeated strings as indices into small tables: a third of the bytes
    # of one object per row, before gzip.
    tables: dict[str, dict[str, int]] = {
        k: {} for k in ("dir", "label", "issue", "action", "reason")
    }

    def ix(table: str, value) -> int:
        if value is None:
            return -1
        t = tables[table]
        return t.setdefault(readable_name(str(value)), len(t))

    cols: dict[str, list] = {
        k: []
        for k in (
            "dir",
            "name",
            "label",
            "issue",
            "conf",
            "group",
            "keep",
            "action",
            "reason",
            "suggested",
            "id",
        )
    }
    for r in rows:
        path = readable_name(r.path)
        folder, _, name = path.rpartition("/")
        reason = (
            scan_reason.get(r.image_id) if r.reason and r.reason.startswith("scan status") else None
        )
        cols["dir"].append(ix("dir", folder))
        cols["name"].append(name)
        cols["label"].append(ix("label", r.label))
        cols["issue"].append(ix("issue", r.issue))
        cols["conf"].append(round(100 * float(r.confidence)))
        cols["group"].append(-1 if r.grp is None else int(r.grp))
        cols["keep"].append(int(bool(r.keep)))
        cols["action"].append(
            ix("action", finding_action(r.issue, bool(r.keep), r.decision, r.decided_label))
        )
        cols["reason"].append(ix("reason", reason or r.reason))
        cols["suggested"].append(ix("label", r.suggested_label))
        cols["id"].append(int(r.image_id))

    # Inline thumbnails only for the galleries: the surest findings of each issue and the
    # largest duplicate groups (what a reader opens first). The findings table reuses them
    # and loads the rest lazily from the files.
    by_issue: dict[str, list] = {}
    for r in rows:
        by_issue.setdefault(r.issue, []).append(r)
    by_group: dict[int, list] = {}
    for k in DUPLICATE_KINDS:
        for r in by_issue.get(k, []):
            by_group.setdefault(r.grp, []).append(r)
    shown_groups = sorted(by_group.values(), key=len, reverse=True)[:groups]
    surest = {
        kind: sorted(items, key=lambda r: -r.confidence)[:per_issue]
        for kind, items in by_issue.items()
        if kind not in DUPLICATE_KINDS
    }
    picks = {r.image_id: r.path for m in [*shown_groups, *surest.values()] for r in m}
    thumbs: dict[int, str | None] = {}
    for k, (image_id, path) in enumerate(picks.items()):
        thumbs[image_id] = thumb(path)
        if progress:
            progress(k + 1, len(picks))

    def card(r, extra: str, kept: bool = False) -> str:
        src = thumbs.get(r.image_id)
        pic = (
            f'<img src="{src}" data-id="{r.image_id}" alt="">'
            if src
            else '<div class="broken"></div>'
        )
        return (
            f'<figure class="card{" kept" if kept else ""}">{pic}<figcaption><b>'
            f"{html.escape(readable_name(r.path))}</b><br>"
            f"{html.escape(readable_name(str(r.label)))}{extra}</figcaption></figure>"
        )

    gallery = []
    if shown_groups:
        gallery.append(
            f"<h2>Duplicate groups: the {len(shown_groups)} largest of {len(by_group)} "
            "(kept copy framed in green)</h2>"
        )
        for members in shown_groups:
            gallery.append('<div class="group row">')
            for r in sorted(members, key=lambda r: -r.keep):
                what = "<br><b>kept</b>" if r.keep else f"<br>{r.issue} {r.confidence:.2f}"
                gallery.append(card(r, what, kept=bool(r.keep)))
            gallery.append("</div>")
    for kind, worst in surest.items():
        gallery.append(
            f"<h2>{kind}: the {len(worst)} surest of {len(by_issue[kind])}</h2><div class=row>"
        )
        for r in worst:
            reason = scan_reason.get(r.image_id) or r.reason
            sugg = f"<br>suggested: {html.escape(r.suggested_label)}" if r.suggested_label else ""
            reason = f"<br>{html.escape(reason)}" if reason else ""
            gallery.append(card(r, f"<br>confidence {r.confidence:.2f}{sugg}{reason}"))
        gallery.append("</div>")

    payload = {
        "tables": {k: list(v) for k, v in tables.items()},
        "cols": cols,
        "root": root.resolve().as_uri() + "/",
    }
    packed = base64.b64encode(gzip.compress(json.dumps(payload, separators=(",", ":")).encode(), 6))
    files = max(summary["files"], 1)
    kept = summary.get("kept") or {}  # a catalog cleaned before it was stored: none
    issue_rows = []
    for kind, count in sorted(summary["by_issue"].items(), key=lambda kv: -kv[1]):
        conf = (summary.get("confidence") or {}).get(kind)
        bench = BENCH_PRECISION.get(kind, 1.0 if ACTIONS[kind] == "drop" else None)
        issue_rows.append(
            f"<tr><td>{kind}</td><td>{count}</td><td>{100 * count / files:.1f}%</td>"
            f"<td>{ACTIONS[kind]}</td><td>{kept.get(kind, '')}</td>"
            f"<td>{'' if conf is None else f'{conf:.2f}'}</td>"
            f"<td>{'' if bench is None else f'{bench:.2f}'}</td></tr>"
        )
    top = max(summary["counts_before"].values(), default=1)
    class_rows = [
        f"<tr><td>{html.escape(cls)}</td><td>{before}</td>"
        f"<td>{summary['counts_after'].get(cls, 0)}</td><td><span class=bar style="
        f'"width:{200 * summary["counts_after"].get(cls, 0) / top:.0f}px"></span></td></tr>'
        for cls, before in summary["counts_before"].items()
    ]
    groups = summary.get("duplicate_groups", 0)
    fields = {
        "@FILES@": str(summary["files"]),
        "@FLAGGED@": str(summary["flagged"]),
        "@SHARE@": f"{100 * summary['flagged'] / files:.1f}",
        "@GROUPS@": f"{groups} duplicate group{'' if groups == 1 else 's'}",
        "@REVIEW@": str(summary["review"]),
        "@KEPT@": html.escape(kept_copies_note(summary["by_issue"], kept) or ""),
        "@ISSUES@": "".join(issue_rows),
        "@CLASSES@": "".join(class_rows),
        "@GALLERY@": "\n".join(gallery),
        "@DATA@": packed.decode(),  # base64: nothing in it can close the script
    }
    page = resources.files("thresher.clean").joinpath("report_page.html").read_text()
    for mark, value in fields.items():
        page = page.replace(mark, value)
    out.write_text(readable_name(page))  # a non-UTF-8 folder name, as \xNN
    return out
