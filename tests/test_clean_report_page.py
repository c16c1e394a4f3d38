"""The clean report in a real Chromium, opened from disk: every finding pages and filters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_review import CHROMIUM, CHROMIUM_ARGS
from thresher.catalog import Catalog
from thresher.clean.report import html_report


@pytest.mark.slow
def test_report_pages_filters_and_enlarges_offline(cleaned_pristine, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    ws, _ = cleaned_pristine
    report = html_report(ws, out=tmp_path / "report.html")
    with Catalog(ws, create=False) as cat:
        rows = cat.issues()
    corrupt = sum(r.issue == "corrupt" for r in rows)
    with sync_playwright() as pw:
        exe = CHROMIUM if Path(CHROMIUM).exists() else None
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report.as_uri())
        shown = page.locator("#shown")
        expect(shown).to_have_text(f"showing 1\u201350 of {len(rows)}")
        expect(page.locator("#findings tbody tr")).to_have_count(50)
        page.click("#next")
        expect(shown).to_contain_text(f"showing 51\u2013{min(100, len(rows))} of {len(rows)}")
        label = page.locator("#f-issue option", has_text="corrupt").get_attribute("value")
        page.select_option("#f-issue", label)
        expect(shown).to_have_text(
            f"showing 1\u2013{corrupt} of {corrupt} ({len(rows)} findings in all)"
        )
        expect(page.locator("#findings tbody")).to_contain_text("decode failed")
        page.select_option("#f-issue", "")
        page.locator("#findings img[data-i]").first.click()
        expect(page.locator("#big")).to_be_visible()
        page.keyboard.press("Escape")
        expect(page.locator("#big")).to_be_hidden()
        assert not errors, errors
        assert all(u.startswith(("file:", "data:")) for u in requests), requests  # offline
        browser.close()
