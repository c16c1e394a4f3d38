"""Review of a duplicate group: the group view, its decisions, and the no-copy-left rule (API)."""

from __future__ import annotations

import sqlite3

from thresher.catalog import Catalog
from thresher.issue_model import default_fate
from thresher.review.groups import orphan_refusal, survives


def test_default_fate_and_survival_follow_the_actions():
    assert default_fate([("near_duplicate", False), ("upscaled", False)]) == "upscaled"
    assert default_fate([("label_error", False), ("exact_duplicate", False)]) == "exact_duplicate"
    assert default_fate([("exact_duplicate", True), ("near_duplicate", False)]) == "near_duplicate"
    # an edit of the kept copy, or a label doubt, waits for a person: kept meanwhile
    assert default_fate([("exact_duplicate", True), ("near_duplicate_edit", False)]) is None
    assert default_fate([("label_error", False)]) is None
    assert survives([("exact_duplicate", False)], ("keep", None))
    assert not survives([("exact_duplicate", True)], ("drop", None))
    issues = {1: [("exact_duplicate", True)], 2: [("exact_duplicate", False)]}
    assert orphan_refusal(issues, {}, {1: ("drop", None)})  # the kept one, the copy dropped
    assert orphan_refusal(issues, {}, {1: ("drop", None), 2: ("keep", None)}) is None
    # Already without a copy (another issue drops the kept one): no worse, not refused.
    dead = {1: [("exact_duplicate", True), ("blank", False)], 2: [("exact_duplicate", False)]}
    assert orphan_refusal(dead, {}, {1: ("drop", None)}) is None


def _groups(ws, kind: str) -> dict[int, list]:
    with Catalog(ws, create=False) as cat:
        rows = [r for r in cat.issues() if r.issue == kind]
    out: dict[int, list] = {}
    for r in rows:
        out.setdefault(r.grp, []).append(r)
    return out


def test_group_view_names_what_tells_the_members_apart(client, cleaned_copy):
    group, rows = next(iter(_groups(cleaned_copy, "exact_duplicate").items()))
    g = client.get(f"/api/groups/{group}").json()
    members = g["members"]
    assert len(members) >= 2 and members[0]["keep"] and not any(m["keep"] for m in members[1:])
    exact_copies = {r.image_id for r in rows if not r.keep}
    for m in members:
        assert {"width", "height", "effective_short_side", "size_bytes", "format"} <= set(m)
        if m["keep"]:
            assert m["fate"] == "kept (the copy its group keeps)"
        elif m["id"] in exact_copies:
            assert m["fate"] == "dropped as a copy (exact duplicate)"
        else:  # a near copy made from it keeps one too; an edit waits for a person
            edit = any(x["issue"] == "near_duplicate_edit" for x in
                       client.get(f"/api/items/{m['id']}").json()["issues"])  # fmt: skip
            want = "kept" if edit else "dropped as a copy (near duplicate)"
            assert m["fate"] == want
    copy = next(m for m in members if m["id"] in exact_copies)
    assert copy["same_pixels_as"]  # an exact copy says of which member
    d = client.get(f"/api/items/{copy['id']}").json()
    assert d["fate"] == "dropped as a copy (exact duplicate)"
    reason = next(x["reason"] for x in d["issues"] if x["issue"] == "exact_duplicate")
    assert reason == f"same pixels as {copy['same_pixels_as']}"
    assert client.get("/api/groups/999999").status_code == 404


def test_keep_one_drops_the_rest_and_not_copies_keeps_all(client, cleaned_copy):
    group = next(iter(_groups(cleaned_copy, "exact_duplicate")))
    members = [m["id"] for m in client.get(f"/api/groups/{group}").json()["members"]]
    chosen = members[-1]  # not the kept one
    r = client.post(f"/api/groups/{group}", json={"action": "keep_one", "image_id": chosen})
    assert r.status_code == 200
    with Catalog(cleaned_copy) as cat:
        got = cat.decisions()
    assert got[chosen] == ("keep", None)
    assert all(got[m] == ("drop", None) for m in members if m != chosen)
    # Undo puts every member back as it was.
    back = client.post(
        f"/api/groups/{group}", json={"action": "restore", "previous": r.json()["previous"]}
    )
    assert back.status_code == 200
    with Catalog(cleaned_copy) as cat:
        assert not set(cat.decisions()) & set(members)
    client.post(f"/api/groups/{group}", json={"action": "not_copies"})
    with Catalog(cleaned_copy) as cat:
        assert all(cat.decisions()[m] == ("keep", None) for m in members)
    bad = client.post(f"/api/groups/{group}", json={"action": "keep_one", "image_id": 10**6})
    assert bad.status_code == 422 and "not in duplicate group" in bad.json()["error"]
    assert client.post(f"/api/groups/{group}", json={"action": "keep_one"}).status_code == 422


def test_no_decision_leaves_a_group_without_a_copy_unless_drop_all(client, cleaned_copy):
    # A group of exact copies only: the kept one is the one copy export keeps by default.
    group, members = next(
        (g, ms)
        for g in _groups(cleaned_copy, "exact_duplicate")
        for ms in [client.get(f"/api/groups/{g}").json()["members"]]
        if [m["fate"].startswith("kept") for m in ms] == [True] + [False] * (len(ms) - 1)
    )
    kept, copies = members[0]["id"], [m["id"] for m in members[1:]]
    # The copies go by default: dropping the kept one too is refused, and nothing is saved.
    r = client.post("/api/decisions", json={"image_id": kept, "decision": "drop"})
    assert r.status_code == 409 and "no copy" in r.json()["error"]
    with Catalog(cleaned_copy) as cat:
        assert kept not in cat.decisions()
    # Keep a copy first: then the kept one may go.
    assert (
        client.post("/api/decisions", json={"image_id": copies[0], "decision": "keep"}).status_code
        == 200
    )
    assert (
        client.post("/api/decisions", json={"image_id": kept, "decision": "drop"}).status_code
        == 200
    )
    # Undoing the copy's keep would leave none: refused as well.
    r = client.delete(f"/api/decisions/{copies[0]}")
    assert r.status_code == 409
    # Only "drop all" says it on purpose.
    assert client.post(f"/api/groups/{group}", json={"action": "drop_all"}).status_code == 200
    with Catalog(cleaned_copy) as cat:
        assert all(cat.decisions()[m] == ("drop", None) for m in [kept, *copies])


def test_label_conflict_never_suggests_the_files_own_label(client, cleaned_copy):
    # clean suggests the kept copy's label to every member: the kept one's is its own.
    group, rows = next(iter(_groups(cleaned_copy, "exact_duplicate").items()))
    kept = next(r for r in rows if r.keep)
    with sqlite3.connect(cleaned_copy / "catalog.sqlite") as db:
        db.execute(
            "INSERT INTO issues(image_id, issue, confidence, grp, keep, suggested_label, review)"
            " VALUES(?, 'label_conflict', 1.0, ?, 1, ?, 0)",
            (kept.image_id, group, kept.label),
        )
    d = client.get(f"/api/items/{kept.image_id}").json()
    conflict = next(x for x in d["issues"] if x["issue"] == "label_conflict")
    assert conflict["suggested_label"] is None and d["label"] not in d["choices"]
