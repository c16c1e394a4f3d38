"""`thresher review`: decisions in the catalog, the JSON API's safety, and the page in Chromium."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thresher.catalog import Catalog
from thresher.clean.findings import clean
from thresher.clean.report import issue_table
from thresher.errors import ThresherError
from thresher.review.evidence import label_choices, nearest

# -- pure parts ------------------------------------------------------------------------------------


def test_nearest_finds_the_most_similar_rows_across_chunks(monkeypatch):
    import thresher.review.evidence as ev

    monkeypatch.setattr(ev, "_CHUNK", 7)  # several chunks, so the merge across them is tested
    rng = np.random.default_rng(0)
    m = rng.normal(size=(50, 16)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    ids = np.arange(3, 50)  # rows 0-2 are not searchable
    ids_found, sims = nearest(m, ids, m[10], k=5, exclude=10)
    brute = m[ids] @ m[10]
    brute[ids == 10] = -np.inf
    want = ids[np.argsort(-brute)[:5]]
    assert ids_found.tolist() == want.tolist()
    assert np.allclose(sims, m[want] @ m[10], atol=1e-6)
    assert 10 not in ids_found and not set(ids_found) & {0, 1, 2}


def test_neighbours_from_the_index_match_the_brute_force_pass():
    from thresher.catalog import EmbeddingRows
    from thresher.knn import knn_index
    from thresher.review.evidence import neighbours

    rng = np.random.default_rng(1)
    m = rng.normal(size=(300, 32)).astype(np.float16)
    m /= np.linalg.norm(m.astype(np.float32), axis=1, keepdims=True).astype(np.float16)
    ids = np.arange(20, 300, 2)  # row id != index position
    index = knn_index(EmbeddingRows(m, ids))
    for image_id in (20, 100, 298):
        a_ids, a_sims = neighbours(index, m, ids, image_id, 6)
        b_ids, b_sims = neighbours(None, m, ids, image_id, 6)
        assert a_ids.tolist() == b_ids.tolist() and image_id not in a_ids
        assert np.allclose(a_sims, b_sims, atol=1e-3)


def test_label_choices_order_and_limits():
    counts = {"dog": 50, "cat": 40, "koala": 3, "fox": 9}
    got = label_choices("dog", ["koala", None], ["cat", "fox", "fox", "dog"], counts)
    assert got == ["koala", "fox", "cat"]  # suggestion, then neighbour votes, never the label
    assert label_choices("dog", [], [], counts, limit=2) == ["cat", "fox"]


# -- decisions in the catalog ----------------------------------------------------------------------


def test_decisions_are_stored_replaced_and_survive_a_new_clean(cleaned_copy):
    ws = cleaned_copy
    with Catalog(ws) as cat:
        queue = cat.review_queue()
        a, b = queue[0][0], queue[1][0]
        assert cat.decide(a, "drop") is None
        assert cat.decide(a, "relabel", "star") == ("drop", None)
        assert cat.decide(b, "keep") is None
        assert cat.review_progress() == (len(queue), 2)
        with pytest.raises(ThresherError, match="label goes with 'relabel'"):
            cat.decide(a, "relabel")
        with pytest.raises(ThresherError, match="no image with id"):
            cat.decide(10**9, "keep")
    clean(ws, log=lambda m: None)  # replaces the issue table wholesale; decisions stay
    with Catalog(ws) as cat:
        assert cat.decisions() == {a: ("relabel", "star"), b: ("keep", None)}
        assert cat.undecide(b) == ("keep", None)
        assert cat.decisions() == {a: ("relabel", "star")}
    t = issue_table(ws).to_pydict()
    rows = [i for i, p in enumerate(t["path"]) if p == queue[0][1]]
    assert rows and all(t["decision"][i] == "relabel" for i in rows)
    assert all(t["decided_label"][i] == "star" for i in rows)
    assert {t["decision"][i] for i, p in enumerate(t["path"]) if p != queue[0][1]} == {None}


def test_the_queue_comes_in_the_order_clean_ranked_it(cleaned_pristine):
    ws, summary = cleaned_pristine
    with Catalog(ws, create=False) as cat:
        queue = cat.review_queue()
        ranks = dict(
            cat._db.execute("SELECT image_id, MIN(review) FROM issues WHERE review > 0 GROUP BY 1")
        )
    assert len(queue) == summary.review > 0
    assert [ranks[r[0]] for r in queue] == list(range(1, len(queue) + 1))


# -- the API, in process ---------------------------------------------------------------------------


def _first(ws: Path, kind: str, keep: bool | None = None) -> int:
    with Catalog(ws, create=False) as cat:
        rows = cat.issues()
    return next(r[9] for r in rows if r[2] == kind and (keep is None or bool(r[5]) == keep))


def test_api_decides_undoes_and_reports_progress(client, cleaned_copy):
    q = client.get("/api/queue").json()
    assert q["total"] == len(q["items"]) > 0 and q["decided"] == 0
    first = q["items"][0]["id"]
    r = client.post("/api/decisions", json={"image_id": first, "decision": "drop"})
    assert r.status_code == 200 and r.json()["previous"] is None and r.json()["decided"] == 1
    r = client.post(
        "/api/decisions", json={"image_id": first, "decision": "relabel", "label": " star "}
    )
    assert r.json()["previous"] == {"decision": "drop", "label": None}
    assert r.json()["label"] == "star"  # trimmed
    with Catalog(cleaned_copy) as cat:  # on disk before the response came back
        assert cat.decisions() == {first: ("relabel", "star")}
    r = client.delete(f"/api/decisions/{first}")
    assert r.json()["previous"] == {"decision": "relabel", "label": "star"}
    assert r.json()["decided"] == 0
    # The queue filters by issue kind and by class.
    kind = next(iter(q["issues"]))
    only = client.get("/api/queue", params={"issue": kind}).json()["items"]
    assert len(only) == q["issues"][kind]
    label = next(iter(q["labels"]))
    assert (
        len(client.get("/api/queue", params={"label": label}).json()["items"])
        == (q["labels"][label])
    )


@pytest.mark.parametrize(
    "body, words",
    [
        ({"image_id": 1, "decision": "burn"}, "decision"),
        ({"image_id": 1, "decision": "relabel"}, "'relabel' needs a label"),
        ({"image_id": 1, "decision": "keep", "label": "cat"}, "'keep' takes no label"),
        ({"image_id": 1, "decision": "relabel", "label": "   "}, "must not be blank"),
        ({"image_id": 1, "decision": "relabel", "label": "../etc"}, "slashes"),
        ({"image_id": 1, "decision": "keep", "path": "/etc/passwd"}, "path"),
        ({"image_id": "one", "decision": "keep"}, "image_id"),
        ({"image_id": -1, "decision": "keep"}, "image_id"),
    ],
)
def test_bad_bodies_get_a_422_that_says_what_is_wrong(client, body, words):
    r = client.post("/api/decisions", json=body)
    assert r.status_code == 422
    assert words in r.json()["error"]


def test_unknown_ids_and_non_json_bodies_are_4xx(client):
    r = client.post("/api/decisions", json={"image_id": 10**9, "decision": "keep"})
    assert r.status_code == 404 and "no image with id" in r.json()["error"]
    r = client.post("/api/decisions", content="image_id=1&decision=keep")
    assert r.status_code == 422
    assert client.get("/api/items/999999").status_code == 404
    assert client.delete("/api/decisions/999999").status_code == 404


def test_images_are_served_by_id_only(client, cleaned_copy):
    ok_id = client.get("/api/queue").json()["items"][0]["id"]
    r = client.get(f"/api/images/{ok_id}", params={"size": 200})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(r.content)).size) <= 200
    corrupt = _first(cleaned_copy, "corrupt")
    assert client.get(f"/api/images/{corrupt}").status_code == 404
    for probe in ("/api/images/..%2F..%2Fetc%2Fpasswd", "/api/images/1/../../catalog.sqlite"):
        r = client.get(probe)
        assert r.status_code in (404, 422) and b"SQLite" not in r.content
    assert client.get("/catalog.sqlite").status_code == 404
    assert client.get("/api/images/1", params={"size": 10**6}).status_code == 422


def test_item_evidence_duplicates_and_suggestions(client, cleaned_copy):
    copy = _first(cleaned_copy, "near_duplicate", keep=False)
    d = client.get(f"/api/items/{copy}").json()
    assert d["evidence"]["kind"] == "duplicates"
    members = d["evidence"]["items"]
    assert members and members[0]["keep"] and copy not in [m["id"] for m in members]
    wrong = _first(cleaned_copy, "label_error")
    d = client.get(f"/api/items/{wrong}").json()
    suggested = next(x["suggested_label"] for x in d["issues"] if x["issue"] == "label_error")
    assert d["choices"][0] == suggested != d["label"]
    assert d["evidence"]["kind"] == "neighbours" and len(d["evidence"]["items"]) == 8
    sims = [n["similarity"] for n in d["evidence"]["items"]]
    assert sims == sorted(sims, reverse=True)


def test_dns_rebinding_and_tokens(cleaned_copy):
    from fastapi.testclient import TestClient

    from thresher.review.server import make_app

    with TestClient(make_app(cleaned_copy), base_url="http://evil.example") as c:
        assert c.get("/api/queue").status_code == 403  # loopback server, foreign Host
    app = make_app(cleaned_copy, token="s3cret", loopback=False)
    with TestClient(app, base_url="http://192.0.2.7:8765") as c:
        assert c.get("/api/queue").status_code == 401
        assert c.get("/api/queue", headers={"x-thresher-token": "wrong"}).status_code == 401
        assert c.get("/api/queue", headers={"x-thresher-token": "s3cret"}).status_code == 200
        r = c.get("/", params={"token": "s3cret"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"  # token leaves the URL
        assert "httponly" in r.headers["set-cookie"].lower()
        assert c.get("/api/queue").status_code == 200  # the cookie now carries it
    app.state.catalog.close()


def test_a_non_loopback_host_needs_a_token(cleaned_copy):
    r = subprocess.run(
        [sys.executable, "-m", "thresher.cli", "review", "-w", cleaned_copy, "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "without a token" in r.stderr and "--token" in r.stderr
    assert "Traceback" not in r.stderr


# -- the page, in a real Chromium against a real server --------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


class Server:
    """`thresher review --port 0` in a subprocess; `url` is what it printed."""

    def __init__(self, ws: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "thresher.cli", "review", "-w", str(ws), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(self.proc.stdout.readline()))
        reader.start()
        reader.join(60)
        line = got[0] if got else ""
        assert line.startswith("review: http://127.0.0.1:"), line
        self.url = line.split()[1]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def _decisions(ws: Path) -> dict[int, tuple]:
    with sqlite3.connect(ws / "catalog.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return {r[0]: (r[1], r[2]) for r in db.execute("SELECT * FROM decisions")}


@pytest.mark.slow
def test_review_in_chromium_survives_kill_9_and_two_tabs(cleaned_copy, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    ws = cleaned_copy
    with Catalog(ws) as cat:
        queue = cat.review_queue()
    ids, paths, n = [r[0] for r in queue], [r[1] for r in queue], len(queue)
    assert n >= 6
    server = Server(ws)
    try:
        with sync_playwright() as pw:
            exe = CHROMIUM if Path(CHROMIUM).exists() else None  # else playwright's own
            browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url)
            pos = page.locator("#position")
            expect(pos).to_have_text(f"1 of {n}")
            expect(page.locator("#name")).to_have_text(paths[0])
            expect(page.locator("#progress-text")).to_contain_text(f"0 / {n} decided")
            # Polled from here: wait_for_function compiles its predicate with eval inside the
            # page when the first check fails, which the page's CSP (rightly) refuses.
            deadline = time.monotonic() + 30
            while not page.evaluate("document.getElementById('image').naturalWidth > 0"):
                assert time.monotonic() < deadline, "the first image never loaded"
                time.sleep(0.1)
            page.screenshot(path=str(tmp_path / "review.png"))
            if os.environ.get("THRESHER_SCREENSHOTS"):
                page.screenshot(path=os.path.join(os.environ["THRESHER_SCREENSHOTS"], "review.png"))

            page.keyboard.press("k")
            expect(pos).to_have_text(f"2 of {n}")
            page.keyboard.press("d")
            expect(pos).to_have_text(f"3 of {n}")
            choice = page.locator("#choices li span").first.inner_text()
            page.keyboard.press("1")
            expect(pos).to_have_text(f"4 of {n}")
            page.keyboard.press("/")
            page.keyboard.type("new label")
            page.keyboard.press("Enter")
            expect(pos).to_have_text(f"5 of {n}")
            expect(page.locator("#progress-text")).to_contain_text(f"4 / {n} decided")
            assert _decisions(ws) == {
                ids[0]: ("keep", None),
                ids[1]: ("drop", None),
                ids[2]: ("relabel", choice),
                ids[3]: ("relabel", "new label"),
            }
            page.keyboard.press("u")  # back to the 4th, undecided again
            expect(pos).to_have_text(f"4 of {n}")
            expect(page.locator("#decision")).to_have_text("undecided")
            assert ids[3] not in _decisions(ws)
            page.keyboard.press("ArrowLeft")
            expect(pos).to_have_text(f"3 of {n}")
            expect(page.locator("#decision")).to_have_text(f"decided: relabel → {choice}")
            page.keyboard.press("ArrowRight")
            expect(pos).to_have_text(f"4 of {n}")

            # kill -9: nothing lost, and the next server opens at the first undecided file.
            server.kill()
            assert len(_decisions(ws)) == 3
            server = Server(ws)
            tab_a, tab_b = page, browser.new_page(viewport={"width": 1440, "height": 900})
            for tab in (tab_a, tab_b):
                tab.goto(server.url)
                expect(tab.locator("#position")).to_have_text(f"4 of {n}")
                expect(tab.locator("#name")).to_have_text(paths[3])
                expect(tab.locator("#progress-text")).to_contain_text(f"3 / {n} decided")
            # Two tabs on one queue: both decide the 4th file, then tab A the 5th. The last
            # write wins for the 4th; nothing else is touched or duplicated.
            tab_a.keyboard.press("k")
            expect(tab_a.locator("#position")).to_have_text(f"5 of {n}")
            tab_b.keyboard.press("d")
            expect(tab_b.locator("#position")).to_have_text(f"5 of {n}")
            tab_a.keyboard.press("d")
            expect(tab_a.locator("#position")).to_have_text(f"6 of {n}")
            got = _decisions(ws)
            assert got[ids[3]] == ("drop", None) and got[ids[4]] == ("drop", None)
            assert len(got) == 5

            # The issue filter narrows the queue to files with that issue.
            kind = tab_a.locator("#filter-issue option").nth(1).get_attribute("value")
            tab_a.select_option("#filter-issue", kind)
            expect(tab_a.locator("#position")).to_contain_text(" of ")
            expect(tab_a.locator(f'#issues li[data-issue="{kind}"]')).to_have_count(1)
            assert not errors, errors
            browser.close()
    finally:
        server.kill()
    t = issue_table(ws).to_pydict()
    decided = {p for p, d in zip(t["path"], t["decision"], strict=True) if d}
    assert decided == set(paths[:5])
