"""The review page in a real Chromium at 1280x720 and 1920x1080: what must be on screen is on
screen (bounding boxes inside the viewport), 1:1 zoom, evidence that opens large, and the
duplicate group view with its keys."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from tests.test_review import CHROMIUM, CHROMIUM_ARGS, Server, _decisions
from thresher.catalog import Catalog
from thresher.issue_model import DUPLICATE_KINDS

VIEWPORTS = [(1280, 720), (1920, 1080)]


def _inside(page, selector: str, w: int, h: int) -> None:
    boxes = [
        page.locator(selector).nth(i).bounding_box() for i in range(page.locator(selector).count())
    ]
    assert boxes, f"nothing matches {selector}"
    for b in boxes:
        assert b is not None, f"{selector} is not rendered"
        assert b["x"] >= 0 and b["y"] >= 0, (selector, b)
        assert b["x"] + b["width"] <= w + 0.5 and b["y"] + b["height"] <= h + 0.5, (
            selector,
            b,
            w,
            h,
        )


def _wait(page, js: str, what: str, seconds: float = 30) -> None:
    # Polled from here: the page's CSP refuses wait_for_function's eval.
    deadline = time.monotonic() + seconds
    while not page.evaluate(js):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _shot(page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name))
    if os.environ.get("THRESHER_SCREENSHOTS"):
        page.screenshot(path=os.path.join(os.environ["THRESHER_SCREENSHOTS"], name))


@pytest.mark.slow
def test_review_page_at_two_sizes_zoom_evidence_and_group_view(cleaned_copy, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    ws = cleaned_copy
    # The demo's queue (capped at review_fraction) holds no copies: queue one near-duplicate
    # group's copies last, as a larger crawl would.
    with sqlite3.connect(ws / "catalog.sqlite") as db:
        db.execute(
            "UPDATE issues SET review = 1000 + rowid WHERE issue = 'near_duplicate' AND grp = "
            "(SELECT MIN(grp) FROM issues WHERE issue = 'near_duplicate')"
        )
    with Catalog(ws) as cat:
        queue = cat.review_queue()
        rows = cat.issues()
    kinds = {r[0]: r[3].split(",") for r in queue}
    busiest = max(range(len(queue)), key=lambda i: len(kinds[queue[i][0]]))
    grouped = {r.image_id: r.grp for r in rows if r.issue in DUPLICATE_KINDS}
    server = Server(ws)
    try:
        with sync_playwright() as pw:
            exe = CHROMIUM if Path(CHROMIUM).exists() else None
            browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
            for w, h in VIEWPORTS:
                page = browser.new_page(viewport={"width": w, "height": h})
                errors: list[str] = []
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.goto(server.url)
                expect(page.locator("#position")).to_have_text(f"1 of {len(queue)}")
                for _ in range(busiest):  # the file with the most issues: the fullest panel
                    page.keyboard.press("ArrowRight")
                expect(page.locator("#position")).to_have_text(f"{busiest + 1} of {len(queue)}")
                _wait(page, "document.getElementById('image').naturalWidth > 0", "no image")
                expect(page.locator("#fate")).to_contain_text("if you do nothing: ")
                for sel in (
                    "#choices li",
                    "#btn-keep",
                    "#btn-drop",
                    "#fate",
                    "#label",
                    "#image",
                    "#issues li",
                ):
                    _inside(page, sel, w, h)
                _shot(page, tmp_path, f"review-{w}x{h}.png")

                # 1:1: one file pixel per screen pixel; z again fits it back.
                width = page.evaluate("state.detail.width")
                page.keyboard.press("z")
                expect(page.locator("#zoom-level")).to_contain_text("1:1")
                got = page.evaluate(
                    "document.getElementById('image').getBoundingClientRect().width"
                )
                assert abs(got - width) <= 1, (got, width)
                page.keyboard.press("+")
                assert (
                    page.evaluate("document.getElementById('image').getBoundingClientRect().width")
                    > width * 1.4
                )
                page.keyboard.press("z")
                expect(page.locator("#zoom-level")).to_contain_text("fit")
                page.locator("#image").click()  # the mouse toggles 1:1 too
                expect(page.locator("#zoom-level")).to_contain_text("1:1")
                page.keyboard.press("0")

                # Evidence opens large.
                page.locator("#evidence .thumb").first.click()
                expect(page.locator("#lightbox")).to_be_visible()
                _wait(
                    page,
                    "document.getElementById('lightbox-image').naturalWidth > 0",
                    "no large view",
                )
                box = page.locator("#lightbox-image").bounding_box()
                assert box["height"] > 240 or box["width"] > 240  # larger than the thumbnail
                _inside(page, "#lightbox-image", w, h)
                page.keyboard.press("Escape")
                expect(page.locator("#lightbox")).to_be_hidden()

                # The group view: every member at one size, the differences named.
                page.select_option("#filter-issue", "near_duplicate")
                expect(page.locator("#btn-group")).to_be_visible()
                page.keyboard.press("g")
                expect(page.locator("#group")).to_be_visible()
                members = page.locator("#group-members .member")
                n = members.count()
                assert n >= 2
                pics = [
                    page.locator("#group-members .member .pic").nth(i).bounding_box()
                    for i in range(n)
                ]
                assert len({(round(b["width"]), round(b["height"])) for b in pics}) == 1, pics
                _inside(page, "#group-keep", w, h)
                _inside(page, "#group-not", w, h)
                text = page.locator("#group-members").inner_text()
                for word in ("size", "real detail", "bytes", "format", "if you do nothing"):
                    assert word in text
                _shot(page, tmp_path, f"group-{w}x{h}.png")
                ids = [int(members.nth(i).get_attribute("data-id")) for i in range(n)]
                if (w, h) == VIEWPORTS[0]:
                    page.keyboard.press(str(n))  # the last copy, not the kept one
                    page.keyboard.press("k")  # keep this one, drop the rest
                    expect(page.locator("#group")).to_be_hidden()
                    got = _decisions(ws)
                    assert got[ids[-1]] == ("keep", None)
                    assert all(got[i] == ("drop", None) for i in ids[:-1])
                    _wait(page, "!state.busy", "the group decision never finished")
                    page.keyboard.press("u")  # one undo restores the whole group
                    expect(page.locator("#toast")).to_contain_text("undone")
                    assert not set(_decisions(ws)) & set(ids)
                else:
                    page.keyboard.press("n")  # these are not copies
                    expect(page.locator("#group")).to_be_hidden()
                    got = _decisions(ws)
                    assert all(got[i] == ("keep", None) for i in ids)
                assert grouped[ids[0]] == grouped[ids[-1]]
                assert not errors, errors
                page.close()
            browser.close()
    finally:
        server.kill()
