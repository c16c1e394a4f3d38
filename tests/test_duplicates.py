"""Duplicate detection: pure functions on small arrays, then the planted groups of the demo."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from thresher.catalog import Catalog
from thresher.clean.duplicates import (
    Pairs,
    Signals,
    choose_kept,
    connected_groups,
    equal_key_groups,
    find_duplicates,
    group_centrality,
    hash_pairs,
    prune_to_representative,
    real_pixels,
    representatives,
)
from thresher.scan.runner import scan


def test_equal_key_groups_ignores_singletons_and_missing_keys():
    g = equal_key_groups(np.array(["a", "b", "a", None, "c", "b", None], dtype=object))
    assert g[0] == g[2] >= 0 and g[1] == g[5] >= 0 and g[0] != g[1]
    assert g[3] == g[4] == g[6] == -1


def _planted_hashes(n, groups, rng):
    h = rng.integers(0, 2**64 - 1, n, dtype=np.uint64)
    truth = set()
    for b in rng.choice(n // 4, groups, replace=False) * 4:
        for k in (1, 2, 3):
            v = int(h[b])
            for bit in rng.choice(64, int(rng.integers(0, 11)), replace=False):
                v ^= 1 << int(bit)
            h[b + k] = np.uint64(v)
    d = np.bitwise_count(h[:, None] ^ h[None, :])
    i, j = np.nonzero(np.triu(d <= 10, k=1))
    truth = set(zip(i.tolist(), j.tolist(), strict=True))
    return h, truth


def test_hash_pairs_exact_search_finds_every_pair_within_the_radius():
    rng = np.random.default_rng(0)
    h, truth = _planted_hashes(3000, 60, rng)
    p = hash_pairs(h, 10)
    assert set(zip(p.i.tolist(), p.j.tolist(), strict=True)) == truth
    assert (p.value == np.bitwise_count(h[p.i] ^ h[p.j])).all() and (p.value <= 10).all()


def test_permutation_search_agrees_with_the_exact_search():
    rng = np.random.default_rng(1)
    h, truth = _planted_hashes(4000, 80, rng)
    p = hash_pairs(h, 10, exact_up_to=0)  # force the large-N path
    found = set(zip(p.i.tolist(), p.j.tolist(), strict=True))
    assert found <= truth  # never a pair beyond the radius
    assert len(found) >= 0.98 * len(truth)


def test_hash_pairs_only_searches_the_given_rows():
    h = np.array([5, 5, 5, 5], dtype=np.uint64)
    p = hash_pairs(h, 0, rows=np.array([1, 3]))
    assert p.i.tolist() == [1] and p.j.tolist() == [3]


def test_connected_groups_and_representatives():
    g = connected_groups(6, Pairs(np.array([0, 1, 4]), np.array([1, 2, 5]), np.zeros(3)))
    assert g[0] == g[1] == g[2] and g[4] == g[5] and g[0] != g[4] and g[3] == -1
    rep = representatives(g, np.array([1.0, 5.0, 2.0, 9.0, 0.0, 3.0]))
    assert rep.tolist() == [1, 1, 1, -1, 5, 5]


def test_a_chain_cannot_glue_unrelated_images_into_one_group():
    # a ~ b ~ c ~ d pairwise, but d is far from the kept copy a: d leaves the group.
    groups = np.array([0, 0, 0, 0, -1])
    rep = np.array([0, 0, 0, 0, -1])
    close = np.array([True, True, True, False, False])
    g = prune_to_representative(groups, rep, close)
    assert g[:3].tolist() == [0, 0, 0] and g[3] == -1
    # a group left with only its representative dissolves
    g2 = prune_to_representative(np.array([0, 0]), np.array([0, 0]), np.array([True, False]))
    assert g2.tolist() == [-1, -1]


def test_keep_prefers_real_pixels_then_the_central_copy():
    # The original 1000x1000; a 4x blow-up of a 250 px copy; a watermarked same-size variant.
    rp = real_pixels(
        np.array([1000.0, 4000, 1000]),
        np.array([1000.0, 4000, 1000]),
        np.array([1000.0, 250, 1000]),
    )
    assert rp[1] < rp[0]  # the blow-up has fewer real pixels than the original
    groups = np.array([0, 0, 0, 0])
    ph = np.array([0b0, 0b1, 0b11111111, 0b11], dtype=np.uint64)  # row 2 is the odd one out
    cent = group_centrality(groups, ph)
    cent = cent / 64.0  # as clean passes it: 0-1
    kept = choose_kept(groups, np.full(4, 1e6), cent, np.array([1.0, 1.0, 3.0, 1.0]))
    assert cent.argmax() in (0, 1) and kept[0] != 2  # bytes don't beat centrality
    assert (kept == kept[0]).all()  # one kept copy for the whole group
    # More real pixels win over centrality: the 4x blow-up (row 1) never beats the original.
    kept = choose_kept(groups[:3], rp, cent[:3], np.ones(3))
    assert kept[0] != 1


def test_byte_copies_keep_the_same_file_whatever_the_catalog_order():
    # Two byte-identical copies score alike; a parallel scan commits them in either order.
    # Ranked by path, the same one is kept both ways (here "a.jpg", rank 0).
    groups, px, cent, bpp = np.zeros(2, int), np.full(2, 1e6), np.full(2, 0.5), np.ones(2)
    for rank in (np.array([0, 1]), np.array([1, 0])):  # "a.jpg" first, then second
        kept = choose_kept(groups, px, cent, bpp, tiebreak=rank)
        assert (kept == int(np.argmin(rank))).all()


def test_blank_and_simple_images_do_not_form_duplicate_groups():
    n = 6
    ph = np.zeros(n, dtype=np.uint64)  # every image hashes alike, as blanks and simple shapes do
    dh = np.zeros(n, dtype=np.uint64)
    colours = np.array(
        [[10, 10, 10], [200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30], [11, 12, 9]],
        dtype=float,
    )
    sig = Signals(ph, dh, colours)
    r = find_duplicates(
        np.array([None] * n, dtype=object), sig, np.full(n, 1e6), np.ones(n), np.ones(n, dtype=bool)
    )
    assert r.group[0] == r.group[5] >= 0  # same picture, same colour
    assert (r.group[1:5] == -1).all()  # same hash, different colours: not duplicates
    r = find_duplicates(
        np.array([None] * n, dtype=object),
        sig,
        np.full(n, 1e6),
        np.ones(n),
        np.zeros(n, dtype=bool),
    )  # nothing eligible (e.g. all blank)
    assert (r.group == -1).all()


@pytest.mark.parametrize("with_embeddings", [False, True])
def test_planted_duplicate_groups_of_the_demo_are_found(
    crawl, truth, tmp_path, mobilenet_weights, with_embeddings
):
    ws = tmp_path / "ws"
    scan(
        crawl,
        ws,
        workers=1,
        embed=with_embeddings,
        embedder="torchvision:mobilenet_v2",
        weights=mobilenet_weights,
        progress=False,
        log=lambda m: None,
    )
    with Catalog(ws) as cat:
        c = cat.columns(
            [
                "id",
                "path",
                "status",
                "checksum",
                "phash",
                "dhash",
                "width",
                "height",
                "effective_short_side",
                "size_bytes",
                "mean_r",
                "mean_g",
                "mean_b",
                "std_r",
                "dominant_share",
            ]
        )
        emb = cat.embeddings() if with_embeddings else None
    emb = None if emb is None else np.asarray(emb, dtype=np.float32)[c["id"]]
    eligible = (c["status"] == "ok") & (c["std_r"] >= 4) & (c["dominant_share"] < 0.9)
    sig = Signals(c["phash"], c["dhash"], np.stack([c["mean_r"], c["mean_g"], c["mean_b"]], 1), emb)
    r = find_duplicates(
        c["checksum"],
        sig,
        real_pixels(c["width"], c["height"], c["effective_short_side"]),
        np.nan_to_num(c["size_bytes"] / (c["width"] * c["height"])),
        eligible,
    )

    by_path = {t.path: t for t in truth}
    planted = np.array([by_path[p].group for p in c["path"]])

    def pairs(groups):
        out = set()
        for g in set(groups[groups >= 0].tolist()):
            m = np.nonzero(groups == g)[0]
            out |= {(a, b) for a in m for b in m if a < b}
        return out

    want, got = pairs(planted), pairs(r.group)
    assert len(want) > 0
    assert len(want & got) >= 0.95 * len(want)  # recall
    assert len(want & got) >= 0.95 * len(got)  # precision
    kept = Counter(by_path[p].variant for p in c["path"][r.keep])
    assert set(kept) <= {"original", "png"}  # the original, or its lossless re-save
    exact_rows = np.array([by_path[p].exact_copy for p in c["path"]])
    assert r.exact[exact_rows].all() and (r.confidence[exact_rows] == 1.0).all()
    assert ((r.confidence > 0) == ((r.group >= 0) & ~r.keep)).all()
