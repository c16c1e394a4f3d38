"""Issue 18, the review server: cross-site requests, body size, headers on errors, weak tokens,
127.0.0.2, labels that would become paths, and image requests for a file turned into a FIFO."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from thresher.catalog import Catalog


def _first(client) -> int:
    return client.get("/api/queue").json()["items"][0]["id"]


def test_cross_site_and_non_json_posts_change_nothing(client, cleaned_copy):
    image = _first(client)
    body = json.dumps({"image_id": image, "decision": "relabel", "label": "star"})
    attacks = [
        ({"origin": "http://evil.example"}, 403),  # no Content-Type, as a form would send
        ({"origin": "http://evil.example", "content-type": "application/json"}, 403),
        ({"origin": "null", "content-type": "application/json"}, 403),
        ({"sec-fetch-site": "cross-site", "content-type": "application/json"}, 403),
        ({"content-type": "text/plain"}, 422),
    ]
    for headers, status in attacks:
        r = client.post("/api/decisions", content=body, headers=headers)
        assert r.status_code == status, (headers, r.status_code, r.text)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    r = client.delete(f"/api/decisions/{image}", headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    with Catalog(cleaned_copy) as cat:
        assert cat.decisions() == {}
    own = {"origin": "http://127.0.0.1:8765", "sec-fetch-site": "same-origin"}
    r = client.post(
        "/api/decisions", content=body, headers={**own, "content-type": "application/json"}
    )
    assert r.status_code == 200


def test_a_large_body_is_refused_before_it_is_read(client):
    r = client.post(
        "/api/decisions", content=b"x" * (256 * 1024), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


@pytest.mark.parametrize("bad", ["..", ".", "../../../../pwned", "a\\b", "x\ty"])
def test_review_refuses_labels_that_are_not_folder_names(client, bad):
    r = client.post(
        "/api/decisions", json={"image_id": _first(client), "decision": "relabel", "label": bad}
    )
    assert r.status_code == 422 and "label" in r.json()["error"]


def test_errors_carry_the_security_headers_and_tokens_must_be_strong(cleaned_copy):
    from fastapi.testclient import TestClient

    from thresher.review.server import make_app

    app = make_app(cleaned_copy, token="a-long-enough-secret-token", loopback=False)
    with TestClient(app) as c:
        for r in (c.get("/api/queue"), c.get("/api/queue", headers={"host": "evil"})):
            assert r.status_code == 401
            assert r.headers["x-content-type-options"] == "nosniff"
            assert "default-src 'self'" in r.headers["content-security-policy"]
    app.state.catalog.close()
    for token in ("x", "short-token"):  # from the environment, as --help recommends
        r = subprocess.run(
            [sys.executable, "-m", "thresher.cli", "review", "-w", cleaned_copy, "--port", "0"],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "THRESHER_REVIEW_TOKEN": token},
        )  # fmt: skip
        assert r.returncode == 2 and "at least 16" in r.stderr, r.stderr[-1000:]
    r = subprocess.run(
        [sys.executable, "-m", "thresher.cli", "review", "-w", cleaned_copy, "--token", "x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "shows in `ps`" in r.stderr and "at least 16" in r.stderr


def test_cli_review_port_out_of_range_is_one_line(cleaned_copy):
    r = subprocess.run(
        [sys.executable, "-m", "thresher.cli", "review", "-w", cleaned_copy, "--port", "70000"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr and "65535" in r.stderr


@pytest.mark.slow
def test_server_on_127_0_0_2_answers_its_url_and_a_fifo_never_blocks_it(cleaned_copy, tmp_path):
    with Catalog(cleaned_copy) as cat:
        source = cat.get_meta("source")
        crawl = tmp_path / "crawl"
        shutil.copytree(source["root"], crawl, symlinks=True)
        cat.set_meta("source", {**source, "root": str(crawl)})
        queued = [r for r in cat.review_queue() if cat.image(r[0])["status"] == "ok"]
    image_id, path = queued[0][0], queued[0][1]
    (crawl / path).unlink()
    os.mkfifo(crawl / path)  # replaced since the scan
    p = subprocess.Popen(
        [sys.executable, "-m", "thresher.cli", "review", "-w", str(cleaned_copy),
         "--host", "127.0.0.2", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = p.stdout.readline()
            m = re.search(r"review: (http://\S+)", line)
            url = m.group(1) if m else None
        assert url and url.startswith("http://127.0.0.2:"), url
        time.sleep(0.5)
        with urllib.request.urlopen(url + "api/queue", timeout=10) as r:
            assert r.status == 200
        for _ in range(3):  # each request would hang a thread on the FIFO before
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"{url}api/images/{image_id}", timeout=10)
            assert e.value.code == 404
        with urllib.request.urlopen(url + "api/queue", timeout=10) as r:
            assert r.status == 200
    finally:
        p.kill()
        p.wait()
