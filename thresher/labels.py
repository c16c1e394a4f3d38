"""What a class label may be: a label becomes a folder name (export --link), so it is checked.

One rule for every place a label enters: the scan's sources, review's relabel, the export.
"""

from __future__ import annotations

MAX_LABEL_CHARS = 200


def label_problem(label: str) -> str | None:
    """Why `label` cannot name a class folder, or None when it can.

    Refused: empty or blank, '.' and '..', path separators ('/' and '\\\\'), control
    characters, and labels over MAX_LABEL_CHARS.
    """
    if not label.strip():
        return "must not be blank"
    if label.strip() in (".", ".."):
        return "must not be '.' or '..' (a label becomes a folder name)"
    if "/" in label or "\\" in label:
        return "must not hold slashes (a label becomes a folder name)"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in label):
        return "must not hold control characters"
    if len(label) > MAX_LABEL_CHARS:
        return f"must not be over {MAX_LABEL_CHARS} characters"
    return None
