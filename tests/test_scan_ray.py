"""`thresher scan --engine ray`: the same catalog as the local engine, from a real local Ray."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from thresher.scan.runner import scan

RAY = str(Path(sys.executable).parent / "ray")


def catalog_rows(ws: Path) -> dict[str, tuple]:
    """Every image row by path; ids as the paths they stand for, without the scan time.

    Ids follow commit order, which differs between runs of either engine; scanned_at is when.
    """
    con = sqlite3.connect(ws / "catalog.sqlite")
    cols = [r[1] for r in con.execute("PRAGMA table_info(images)")]
    rows = [dict(zip(cols, r, strict=True)) for r in con.execute("SELECT * FROM images")]
    con.close()
    path_of = {r["id"]: r["path"] for r in rows}
    out = {}
    for r in rows:
        r["alias_of"] = path_of.get(r["alias_of"])
        out[r["path"]] = tuple((k, v) for k, v in r.items() if k not in ("id", "scanned_at"))
    return out


def embeddings_by_path(ws: Path) -> dict[str, np.ndarray]:
    """The embedding of every image that has one, by path."""
    con = sqlite3.connect(ws / "catalog.sqlite")
    ids = con.execute("SELECT path, id FROM images WHERE has_embedding = 1").fetchall()
    con.close()
    emb = np.load(ws / "embeddings.npy")
    return {p: emb[i].astype(np.float32) for p, i in ids}


@pytest.fixture
def ray_cluster():
    """A real Ray head on this machine, as `ray start --head` makes one; stopped afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run(
        [RAY, "start", "--head", f"--port={port}", "--num-cpus=2",
         f"--object-store-memory={200 * 2**20}", "--include-dashboard=false",
         "--disable-usage-stats"],
        check=True, capture_output=True, env=env, timeout=180,
    )  # fmt: skip
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)


@pytest.mark.slow
def test_ray_engine_writes_the_same_catalog_as_the_local_engine(
    crawl, tmp_path, mobilenet_weights, ray_cluster
):
    common = dict(embedder="torchvision:mobilenet_v2", weights=mobilenet_weights)
    local = scan(crawl, tmp_path / "ws_local", workers=2, progress=False, log=lambda m: None,
                 **common)  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-m", "thresher.cli", "scan", str(crawl), "-w", str(tmp_path / "ws_ray"),
         "--engine", "ray", "--address", ray_cluster, "--embedder", common["embedder"],
         "--weights", str(mobilenet_weights), "-q"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"joining {ray_cluster}" in r.stderr
    a, b = catalog_rows(tmp_path / "ws_local"), catalog_rows(tmp_path / "ws_ray")
    assert len(a) == local.files > 100
    assert a.keys() == b.keys()
    differ = [p for p in a if a[p] != b[p]]
    assert not differ, [(p, set(a[p]) ^ set(b[p])) for p in differ[:3]]
    ea, eb = embeddings_by_path(tmp_path / "ws_local"), embeddings_by_path(tmp_path / "ws_ray")
    assert ea.keys() == eb.keys() and len(ea) == local.embedded > 100
    for p in ea:  # the same model on the same pixels: float16 storage decides the match
        np.testing.assert_allclose(eb[p], ea[p], atol=2e-3, rtol=2e-3, err_msg=p)

    # A rerun on Ray finds nothing to do: the catalog is the local engine's kind of catalog.
    again = scan(crawl, tmp_path / "ws_ray", engine="ray", address=ray_cluster,
                 progress=False, log=lambda m: None, **common)  # fmt: skip
    assert again.scanned == 0 and again.unchanged > 100
