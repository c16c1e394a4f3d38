"""What clean found, for people and for programs: the issue table (CSV/Parquet) and an HTML report.

The issue table is a public interface (documented in the README): one row per (file, issue),
exactly the columns of ISSUE_TABLE_COLUMNS.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from thresher.catalog import Catalog
from thresher.config import DEFAULT_WORKSPACE
from thresher.errors import ThresherError
from thresher.files import FileRefused, read_regular, readable_name
from thresher.issue_model import DUPLICATE_KINDS

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
            "suggested_label": pa.array(col("suggested_label"), pa.string()),
            "review": pa.array([bool(r) for r in col("review")], pa.bool_()),
            "decision": pa.array(col("decision"), pa.string()),  # a person's (thresher review)
            "decided_label": pa.array(col("decided_label"), pa.string()),
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


def html_report(
    workspace: Path | str = DEFAULT_WORKSPACE,
    out: Path | str | None = None,
    per_issue: int = 24,
    groups: int = 20,
) -> Path:
    """A self-contained HTML report (thumbnails inline) of the last clean; returns its path."""
    from thresher.scan.decode import DecodeIssue, decode

    workspace = Path(workspace)
    out = Path(out) if out else workspace / "report.html"
    with Catalog(workspace, create=False) as cat:
        summary = cat.get_meta("clean_summary")
        source = cat.get_meta("source")
        if summary is None:
            raise ThresherError(f"no issues in {workspace} yet: run `thresher clean` first")
        rows = cat.issues()
    root = Path(source["root"])

    def thumb(path: str) -> str:
        try:
            view = decode(read_regular(root / path), 128, 89_478_485).view
        except (FileRefused, DecodeIssue):
            return '<div class="broken">no preview</div>'
        view.thumbnail((160, 160))
        buf = io.BytesIO()
        view.save(buf, "JPEG", quality=80)
        return f'<img src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}">'

    def card(path, label, extra, kept=False):
        cls = "card kept" if kept else "card"
        return (
            f'<figure class="{cls}">{thumb(path)}<figcaption><b>{html.escape(readable_name(path))}'
            f"</b><br>{html.escape(readable_name(str(label)))}{extra}</figcaption></figure>"
        )

    by_issue: dict[str, list] = {}
    for r in rows:
        by_issue.setdefault(r.issue, []).append(r)
    parts = [
        "<!doctype html><meta charset=utf-8><title>thresher clean report</title><style>",
        "body{font:14px system-ui,sans-serif;margin:2em;color:#222}h2{margin-top:2em}",
        ".row{display:flex;flex-wrap:wrap;gap:10px}.card{width:170px;margin:0;padding:5px;",
        "border:1px solid #ddd;border-radius:6px;background:#fafafa}.card img{max-width:160px}",
        ".kept{border:3px solid #2a8f3c;background:#eefaf0}figcaption{font-size:11px;",
        "word-break:break-all}.group{border-left:4px solid #888;padding-left:8px;margin:10px 0}",
        "table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #eee;",
        "text-align:left}.bar{background:#4a7fd4;height:12px;display:inline-block}",
        ".broken{width:160px;height:100px;background:#eee}</style>",
        f"<h1>thresher clean report</h1><p>{summary['files']} files, "
        f"{summary['flagged']} flagged ({100 * summary['flagged'] / max(summary['files'], 1):.1f}%)"
        f", {summary['review']} in the review queue.</p>",
        "<table><tr><th>issue</th><th>files</th><th>share</th></tr>",
    ]
    for kind, count in summary["by_issue"].items():
        parts.append(
            f"<tr><td>{kind}</td><td>{count}</td>"
            f"<td>{100 * count / max(summary['files'], 1):.1f}%</td></tr>"
        )
    parts.append(
        "</table><h2>Classes before and after cleaning</h2><table>"
        "<tr><th>class</th><th>before</th><th>after</th><th></th></tr>"
    )
    top = max(summary["counts_before"].values(), default=1)
    for cls, before in summary["counts_before"].items():
        after = summary["counts_after"].get(cls, 0)
        parts.append(
            f"<tr><td>{html.escape(cls)}</td><td>{before}</td><td>{after}</td><td>"
            f'<span class="bar" style="width:{200 * after / top:.0f}px"></span></td></tr>'
        )
    parts.append("</table>")
    dups = [r for k in DUPLICATE_KINDS for r in by_issue.get(k, [])]
    if dups:
        parts.append("<h2>Duplicate groups (kept copy framed in green)</h2>")
        by_group: dict[int, list] = {}
        for r in dups:
            by_group.setdefault(r.grp, []).append(r)
        for members in sorted(by_group.values(), key=len, reverse=True)[:groups]:
            parts.append('<div class="group row">')
            for r in sorted(members, key=lambda r: -r.keep):
                what = "<br><b>kept</b>" if r.keep else f"<br>{r.issue} {r.confidence:.2f}"
                parts.append(card(r.path, r.label, what, kept=bool(r.keep)))
            parts.append("</div>")
    for kind, items in by_issue.items():
        if kind in DUPLICATE_KINDS:
            continue
        worst = sorted(items, key=lambda r: -r.confidence)[:per_issue]
        parts.append(f"<h2>{kind} ({len(items)})</h2><div class=row>")
        for r in worst:
            sugg = f"<br>suggested: {html.escape(r.suggested_label)}" if r.suggested_label else ""
            reason = f"<br>{html.escape(r.reason)}" if r.reason else ""
            parts.append(card(r.path, r.label, f"<br>confidence {r.confidence:.2f}{sugg}{reason}"))
        parts.append("</div>")
    out.write_text(readable_name("\n".join(parts)))  # a non-UTF-8 folder name, as \xNN
    return out
