"""Duplicate detection: exact copies and near-duplicates, grouped, with the copy to keep.

Pure functions over catalog columns (checksums, 64-bit hashes, embeddings, sizes): no files, no
database. Never an N x N matrix:
- hash neighbours: exact blocked search on small sets; sorted random bit permutations on large
  ones (FAISS's exact multi-index binary hash is far slower here: bench/near_duplicates.py);
- embedding neighbours: a FAISS inner-product k-NN search, in batches.
A hash match is confirmed by a second signal (dHash or embedding), because line art on white
and other simple pictures collide on pHash alone. Groups come from union-find over confirmed
pairs, then every member must be close to the group's representative (the copy kept), so a
chain a~b~c~d cannot glue unrelated images together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thresher.bits import hamming


@dataclass(frozen=True)
class Pairs:
    """Candidate pairs (i < j) and a per-pair value (distance or similarity)."""

    i: np.ndarray
    j: np.ndarray
    value: np.ndarray

    def __len__(self) -> int:
        return len(self.i)


def equal_key_groups(keys: np.ndarray) -> np.ndarray:
    """Group id per row for rows sharing a key (groups of 2 or more); -1 elsewhere or for None."""
    keys = np.asarray(keys, dtype=object)
    out = np.full(len(keys), -1, dtype=np.int64)
    present = np.array([k is not None and k == k for k in keys], dtype=bool)  # None and NaN out
    idx = np.nonzero(present)[0]
    if len(idx) == 0:
        return out
    _, inverse, counts = np.unique(keys[idx].astype(str), return_inverse=True, return_counts=True)
    shared = counts[inverse] > 1
    _, group = np.unique(inverse[shared], return_inverse=True)
    out[idx[shared]] = group
    return out


def hash_pairs(
    hashes: np.ndarray,
    max_distance: int,
    rows: np.ndarray | None = None,
    exact_up_to: int = 20_000,
    rounds: int = 96,
    window: int = 12,
    seed: int = 0,
) -> Pairs:
    """Pairs of rows whose 64-bit hashes differ in at most `max_distance` bits.

    Up to `exact_up_to` rows: every pair, exactly (blocked brute force, popcount on uint64).
    Beyond: sorted-permutation search. Each round applies a random bit permutation to every
    hash, sorts, and compares each hash with the `window` that follow it; two hashes that agree
    on the first ~log2(N) permuted bits land next to each other. A pair at distance d is found
    in a round with probability about prod((64-d-i)/(64-i)) over those bits, so many rounds find
    it almost surely (bench/near_duplicates.py measures the recall by distance). No N x N
    matrix, no index to hold: memory is a few arrays of N.

    `rows` restricts the search to those rows (blank images all hash alike: leave them out).
    """
    h = np.asarray(hashes, dtype=np.uint64)
    rows = np.arange(len(h)) if rows is None else np.asarray(rows, dtype=np.int64)
    sub = h[rows]
    if len(rows) < 2:
        return Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    if len(rows) <= exact_up_to:
        i, j, d = _brute_force_pairs(sub, max_distance)
    else:
        i, j, d = _permutation_pairs(sub, max_distance, rounds, window, seed)
    return Pairs(rows[i], rows[j], d)


def _brute_force_pairs(h: np.ndarray, r: int):
    i_all, j_all, d_all = [], [], []
    block = max(1, 4_000_000 // max(len(h), 1))
    for s in range(0, len(h), block):
        d = hamming(h[s : s + block, None], h[None, :])
        qi, qj = np.nonzero(d <= r)
        qi += s
        keep = qi < qj
        i_all.append(qi[keep])
        j_all.append(qj[keep])
        d_all.append(d[qi[keep] - s, qj[keep]])
    return (
        np.concatenate(i_all).astype(np.int64),
        np.concatenate(j_all).astype(np.int64),
        np.concatenate(d_all).astype(np.int64),
    )


def _permutation_pairs(h: np.ndarray, r: int, rounds: int, window: int, seed: int):
    rng = np.random.default_rng(seed)
    as_bytes = h.astype(">u8").view(np.uint8).reshape(-1, 8)
    # A bit permutation as 8 lookup tables: byte k's 8 bits, each moved to its new position.
    bit_of = (np.arange(256)[:, None] >> (7 - np.arange(8))[None, :]) & 1  # (256, 8), MSB first
    n = len(h)
    found = np.zeros(0, dtype=np.int64)  # pairs as i * n + j (i < j), deduplicated every round
    for _ in range(rounds):
        perm = rng.permutation(64)  # new position of each original bit (0 = most significant)
        permuted = np.zeros(len(h), dtype=np.uint64)
        for k in range(8):
            shifts = (63 - perm[8 * k : 8 * k + 8]).astype(np.uint64)
            lut = (bit_of.astype(np.uint64) << shifts[None, :]).sum(axis=1).astype(np.uint64)
            permuted |= lut[as_bytes[:, k]]
        order = np.argsort(permuted, kind="stable")
        hs = h[order]
        keys = [found]
        for off in range(1, window + 1):
            close = np.nonzero(hamming(hs[off:], hs[:-off]) <= r)[0]
            a, b = order[close], order[close + off]
            keys.append(np.minimum(a, b) * n + np.maximum(a, b))
        # Sort and drop repeats (np.unique's hash path was 8x slower on these): memory stays at
        # the distinct pairs found so far.
        found = np.concatenate(keys)
        found.sort()
        found = found[np.r_[True, found[1:] != found[:-1]]] if len(found) else found
    i, j = found // n, found % n
    return i, j, hamming(h[i], h[j])


def embedding_pairs(
    embeddings: np.ndarray, min_cosine: float, rows: np.ndarray | None = None, k: int = 10
) -> Pairs:
    """Pairs among each row's k nearest neighbours (L2-normalised rows) with cosine >= min."""
    rows = np.arange(len(embeddings)) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) < 2:
        return Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    import faiss

    dim = embeddings.shape[1]
    index = faiss.IndexFlatIP(dim)
    batch = 16384
    for start in range(0, len(rows), batch):  # memmap rows in, float32 in batches
        index.add(np.ascontiguousarray(embeddings[rows[start : start + batch]], dtype=np.float32))
    kk = min(k + 1, len(rows))
    i_all, j_all, s_all = [], [], []
    for start in range(0, len(rows), batch):
        q = np.ascontiguousarray(embeddings[rows[start : start + batch]], dtype=np.float32)
        sims, ids = index.search(q, kk)
        qi = np.repeat(np.arange(start, start + len(q)), kk)
        ids, sims = ids.ravel(), sims.ravel()
        keep = (ids > qi) & (sims >= min_cosine)
        i_all.append(qi[keep])
        j_all.append(ids[keep])
        s_all.append(sims[keep])
    i, j = np.concatenate(i_all), np.concatenate(j_all)
    return Pairs(rows[i], rows[j], np.concatenate(s_all))


def connected_groups(n: int, pairs: Pairs) -> np.ndarray:
    """Connected components over pairs: group id per row, -1 for rows in no pair."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs.i, pairs.j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    in_pair = np.zeros(n, dtype=bool)
    in_pair[pairs.i] = True
    in_pair[pairs.j] = True
    out = np.full(n, -1, dtype=np.int64)
    _, out[in_pair] = np.unique(labels[in_pair], return_inverse=True)
    return out


def real_pixels(
    width: np.ndarray,
    height: np.ndarray,
    effective_short_side: np.ndarray,
    min_factor: float = 2.0,
):
    """Pixel count scaled by (effective / nominal short side)^2: a blown-up copy counts small.

    Only a copy blown up at least `min_factor` times is discounted: below, the estimate reads
    detail, and a watermark's sharp text or JPEG blocking would win over the clean original.
    """
    w, h = np.nan_to_num(width), np.nan_to_num(height)
    short = np.fmin(w, h)
    eff = np.where(np.isnan(effective_short_side), short, effective_short_side)
    ratio = np.divide(eff, short, out=np.ones_like(eff, dtype=float), where=short > 0)
    ratio = np.where(ratio * min_factor <= 1.0, ratio, 1.0)
    return w * h * np.square(ratio)


LOSSLESS_FORMATS = ("PNG", "BMP", "TIFF", "PPM", "GIF")


def _group_runs(groups: np.ndarray) -> list[np.ndarray]:
    member = np.nonzero(groups >= 0)[0]
    order = member[np.argsort(groups[member], kind="stable")]
    return np.split(order, np.flatnonzero(np.diff(groups[order])) + 1) if len(order) else []


def embedding_centrality(groups: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Mean cosine of each member to the other members of its group (0 outside groups).

    Finer than pHash bits: a watermark or a crop moves a copy away from the rest, a re-encode
    barely does.
    """
    out = np.zeros(len(groups), dtype=np.float64)
    for m in _group_runs(groups):
        if len(m) < 2:
            continue
        e = np.asarray(embeddings[m], dtype=np.float64)
        out[m] = ((e @ e.T).sum(axis=1) - np.einsum("nd,nd->n", e, e)) / (len(m) - 1)
    return out


def choose_kept(
    groups: np.ndarray,
    real_px: np.ndarray,
    centrality: np.ndarray,
    bytes_per_pixel: np.ndarray,
    lossless: np.ndarray | None = None,
    within: float = 1.5,
    twins: np.ndarray | None = None,
    tiebreak: np.ndarray | None = None,
) -> np.ndarray:
    """Per row, the row index of its group's kept copy (-1 outside groups).

    Among the members with nearly the most real pixels (within `within` x of the group's
    best: a copy enlarged a little, or a JPEG of a PNG, is no better), the one with the most
    same-pixel twins (`twins`: the picture most files carry; it leaves the fewest copies that
    differ from the kept one), then a lossless file,
    then the most central (centrality in 0-1, compared to 0.01), then the lightest compression
    relative to the group (bytes per pixel); among equals (byte copies), the lowest `tiebreak`.
    """
    n = len(groups)
    member = groups >= 0
    top_px = np.zeros(n)
    top_bpp = np.zeros(n)
    g = np.where(member, groups, 0)
    size = int(g.max()) + 1 if member.any() else 1
    best_px, best_bpp = np.zeros(size), np.zeros(size)
    np.maximum.at(best_px, g[member], real_px[member])
    np.maximum.at(best_bpp, g[member], bytes_per_pixel[member])
    top_px[member] = best_px[g[member]]
    top_bpp[member] = best_bpp[g[member]]
    contender = real_px * within >= top_px
    lossless = np.zeros(n) if lossless is None else np.asarray(lossless, float)
    rel_bpp = np.divide(bytes_per_pixel, top_bpp, out=np.zeros(n), where=top_bpp > 0)
    twins = np.zeros(n) if twins is None else np.minimum(np.asarray(twins, float), 99)
    score = (
        contender * 1e9
        + twins * 1e6
        + lossless * 1e5
        + np.floor(np.clip(centrality, 0, 1) * 100) * 100
        + np.minimum(rel_bpp, 1.0) * 99
    )
    return representatives(groups, score, tiebreak)


def group_centrality(groups: np.ndarray, phash: np.ndarray) -> np.ndarray:
    """64 minus the mean pHash distance of each member to the other members of its group."""
    out = np.zeros(len(groups), dtype=np.float64)
    member = np.nonzero(groups >= 0)[0]
    order = member[np.argsort(groups[member], kind="stable")]
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    for m in np.split(order, bounds):
        if len(m) < 2:
            continue
        d = hamming(phash[m][:, None], phash[m][None, :]).sum(axis=1) / (len(m) - 1)
        out[m] = 64.0 - d
    return out


def representatives(
    groups: np.ndarray, scores: np.ndarray, tiebreak: np.ndarray | None = None
) -> np.ndarray:
    """Per row, the row index of its group's best-scoring member (-1 outside groups).

    Equal scores go to the lowest `tiebreak` (e.g. the rank of each row's path). Without it
    they go to the lowest row, and a catalog's row order is the order a parallel scan
    committed its batches: the kept copy of two byte copies would change from scan to scan.
    """
    out = np.full(len(groups), -1, dtype=np.int64)
    member = np.nonzero(groups >= 0)[0]
    if len(member) == 0:
        return out
    tie = np.zeros(len(groups)) if tiebreak is None else np.asarray(tiebreak)
    # Sort by (group, -score, tiebreak): the first row of each group run is its representative.
    order = member[np.lexsort((tie[member], -scores[member], groups[member]))]
    g = groups[order]
    first = np.r_[True, g[1:] != g[:-1]]
    out[member] = order[first][np.searchsorted(g[first], groups[member])]
    return out


def prune_to_representative(groups: np.ndarray, rep: np.ndarray, close: np.ndarray) -> np.ndarray:
    """Drop members not `close` to their representative; dissolve groups left with one member.

    `close[r]` says whether row r is near-identical to rep[r] by some direct measure (hash
    distance or embedding similarity computed between the two): this is what stops chains.
    """
    g = np.where((groups >= 0) & (close | (rep == np.arange(len(groups)))), groups, -1)
    ids, counts = np.unique(g[g >= 0], return_counts=True)
    alone = ids[counts < 2]
    g[np.isin(g, alone)] = -1
    _, g[g >= 0] = np.unique(g[g >= 0], return_inverse=True)
    return g


@dataclass
class DuplicateResult:
    """Per row: `group` (-1 = none), `keep` (the copy kept in its group), `exact` (same pixels as
    another member), `confidence` (0-1: how surely it is a copy of its group's kept one),
    `keep_row` (the row index of the group's kept copy, -1 outside groups)."""

    group: np.ndarray
    keep: np.ndarray
    exact: np.ndarray
    confidence: np.ndarray
    keep_row: np.ndarray


@dataclass(frozen=True)
class Signals:
    """What two images are compared by: hashes, mean colour, and optionally embeddings."""

    phash: np.ndarray  # (N,) uint64
    dhash: np.ndarray  # (N,) uint64
    mean_rgb: np.ndarray  # (N, 3) per-channel means, 0-255
    embeddings: np.ndarray | None = None  # (N, D) L2-normalised, may be a memmap
    max_phash: int = 10
    max_dhash: int = 20
    max_colour_shift: float = 12.0
    min_cosine: float = 0.92
    std_rgb: np.ndarray | None = None  # (N, 3) per-channel spread, 0-255
    max_chroma_shift: float = 7.5
    max_spread_shift: float = 10.0

    def same_colours(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Whether rows i[k] and j[k] have the same colours: copies do, colour variants not.

        Three measures of the 32 x 32 thumbnail: the channel means; the balance between
        channels (means less their average: a hue turn moves it even where white dilutes
        the mean); and the per-channel spread (a recoloured drawing on white changes it
        most). Re-encodes, resizes, crops and watermarks stay within 7.4 on the real bench,
        hue-turned drawings mostly beyond 10.
        """
        a, b = self.mean_rgb[i], self.mean_rgb[j]
        ok = np.abs(a - b).max(axis=1) <= self.max_colour_shift
        chroma = (a - a.mean(axis=1, keepdims=True)) - (b - b.mean(axis=1, keepdims=True))
        ok &= np.abs(chroma).max(axis=1) <= self.max_chroma_shift
        if self.std_rgb is not None:
            ok &= np.abs(self.std_rgb[i] - self.std_rgb[j]).max(axis=1) <= self.max_spread_shift
        return ok

    def same_picture(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Whether rows i[k] and j[k] show the same picture: the one rule, used everywhere.

        pHash close, the same colours (pHash alone pairs simple shapes on plain grounds, and
        colour variants of one drawing), and dHash agreeing; or embeddings very close with pHash
        loosely close (a watermark or crop moves pHash by 10-20 bits, an unrelated image by
        about 32). With embeddings, a hash match must also look alike to the network
        (cosine above min_cosine - 0.07): two simple drawings on white hash alike.
        """
        d_ph = hamming(self.phash[i], self.phash[j])
        d_dh = hamming(self.dhash[i], self.dhash[j])
        colour = self.same_colours(i, j)
        hashes_agree = (d_ph <= self.max_phash) & (d_dh <= self.max_dhash)
        loose = np.zeros(len(i), dtype=bool)
        if self.embeddings is not None:
            cos = row_cosine(self.embeddings, i, j)
            hashes_agree &= cos >= self.min_cosine - 0.07
            loose = (cos >= (1 + self.min_cosine) / 2) & (d_ph <= 2 * self.max_phash + 2)
        return colour & (hashes_agree | loose)

    def confidence(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """0-1: 1 for identical hashes (or embeddings), falling with the distance."""
        conf = 1.0 - hamming(self.phash[i], self.phash[j]) / 32.0
        if self.embeddings is not None:
            conf = np.maximum(conf, row_cosine(self.embeddings, i, j))
        return np.clip(conf, 0.0, 1.0).astype(np.float32)


def find_duplicates(
    exact_key: np.ndarray,
    signals: Signals,
    real_px: np.ndarray,
    bytes_per_pixel: np.ndarray,
    eligible: np.ndarray,
    lossless: np.ndarray | None = None,
    tiebreak: np.ndarray | None = None,
) -> DuplicateResult:
    """Exact and near-duplicate groups over the eligible rows (decoded, not blank).

    Rows sharing `exact_key` are exact duplicates: the pixel checksum (same decoded pixels,
    byte copies included) or, where there is none, the byte checksum.

    Candidates come from the hash search (pHash within max_phash) and, with embeddings, from
    the k-NN search; `signals.same_picture` confirms each; union-find groups them; the best
    copy (`choose_kept`) is kept, and every other member must be the same picture as the kept
    copy, or leave the group.
    """
    n = len(signals.phash)
    eligible = np.asarray(eligible, dtype=bool)
    exact_group = equal_key_groups(np.where(eligible, exact_key, None))
    # Byte-identical copies are settled: search near-duplicates among one copy per checksum.
    first_copy = np.ones(n, dtype=bool)
    ex = np.nonzero(exact_group >= 0)[0]
    _, first = np.unique(exact_group[ex], return_index=True)
    first_copy[ex] = False
    first_copy[ex[first]] = True
    rows = np.nonzero(eligible & first_copy)[0]
    twins = np.zeros(n)
    ids, counts = np.unique(exact_group[ex], return_counts=True)
    twins[ex] = (counts[np.searchsorted(ids, exact_group[ex])] - 1) if len(ex) else 0

    cand = [hash_pairs(signals.phash, signals.max_phash, rows)]
    if signals.embeddings is not None:
        cand.append(embedding_pairs(signals.embeddings, (1 + signals.min_cosine) / 2, rows))
    ci = np.concatenate([c.i for c in cand])
    cj = np.concatenate([c.j for c in cand])
    ok = signals.same_picture(ci, cj)
    near = connected_groups(n, Pairs(ci[ok], cj[ok], np.zeros(0)))

    # Exact copies join their first copy's group (or form one of their own). Exact group ids
    # are 0..G-1 and np.unique sorts them, so heads[g] is the first copy of exact group g.
    group = near.copy()
    heads = ex[first]
    target = np.where(group[heads] >= 0, group[heads], n + np.arange(len(heads)))
    group[ex] = target[exact_group[ex]]

    def best_copies(g):
        if signals.embeddings is not None:
            centrality = embedding_centrality(g, signals.embeddings)
        else:
            centrality = group_centrality(g, signals.phash) / 64.0
        return choose_kept(g, real_px, centrality, bytes_per_pixel, lossless, twins=twins,
                           tiebreak=tiebreak)  # fmt: skip

    rep = best_copies(group)
    r = np.nonzero(group >= 0)[0]
    same_bytes = (exact_group[r] >= 0) & (exact_group[r] == exact_group[rep[r]])
    close = np.zeros(n, dtype=bool)
    close[r] = same_bytes | signals.same_picture(r, rep[r])
    group = prune_to_representative(group, rep, close)

    # Byte-identical (same-pixel) copies always form a group, whatever the pruning did.
    lost = (exact_group >= 0) & (group < 0)
    if lost.any():
        _, fresh = np.unique(exact_group[lost], return_inverse=True)
        group[lost] = (group.max() + 1 if (group >= 0).any() else 0) + fresh
    rep = best_copies(group)
    keep = (group >= 0) & (rep == np.arange(n))
    # exact = the same pixels as the kept copy (the kept copy itself included, if it has twins).
    exact = (group >= 0) & (exact_group >= 0) & (exact_group == exact_group[np.maximum(rep, 0)])
    confidence = np.zeros(n, dtype=np.float32)
    copies = np.nonzero((group >= 0) & ~keep)[0]
    confidence[copies] = signals.confidence(copies, rep[copies])
    confidence[exact & ~keep] = 1.0
    return DuplicateResult(group=group, keep=keep, exact=exact, confidence=confidence, keep_row=rep)


def edits_of_kept(
    result: DuplicateResult, lossless: np.ndarray, width: np.ndarray, height: np.ndarray
) -> np.ndarray:
    """Per row: a copy that is an edit of its group's kept copy, not a copy made from it.

    Both lossless, the same width and height, other pixels. A lossless re-save keeps the
    pixels (an exact duplicate) and the web's copies are re-encoded, resized or cropped; a
    lossless file of the same size with other pixels was edited by someone: a revision, an
    expression or colour variant, a drawing re-used with a new sign. Hashes and embeddings
    cannot tell these from copies: on the real bench 24 of the 28 such copies are other
    pictures, against none of the 149 other near-duplicate copies. So a person decides.
    """
    lossless = np.asarray(lossless, dtype=bool)
    rep = np.maximum(result.keep_row, 0)
    same_size = (np.nan_to_num(width) == np.nan_to_num(width)[rep]) & (
        np.nan_to_num(height) == np.nan_to_num(height)[rep]
    )
    copy = (result.group >= 0) & ~result.keep & ~result.exact
    return copy & lossless & lossless[rep] & same_size


def row_cosine(embeddings: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cosine of row pairs of L2-normalised embeddings, in batches (memmap friendly)."""
    out = np.empty(len(i), dtype=np.float32)
    step = 65536
    for s in range(0, len(i), step):
        a = np.asarray(embeddings[i[s : s + step]], dtype=np.float32)
        b = np.asarray(embeddings[j[s : s + step]], dtype=np.float32)
        out[s : s + step] = np.einsum("nd,nd->n", a, b)
    return out
