"""Near-duplicate search over 64-bit hashes: 1,000,000 with planted groups, and imagededup beside.

    .venv/bin/python bench/near_duplicates.py            # writes its section of bench/RESULTS.md

Synthetic hashes (uniform random) with planted groups: each group is a random hash and 1-9
variants of it with 0-10 bits flipped, as re-encodes, resizes and watermarks move a pHash.
Recall is measured on the planted pairs within Hamming distance 10; the search also returns the
few random pairs that happen to lie that close (about 1e-8 of all pairs), which are correct too.
Peak memory is sampled (RSS) while the search runs. imagededup's own search (its
`find_duplicates` over an encoding map, brute-force Cython, the fastest it offers) runs on the
first 20,000 hashes of the same set (its search is quadratic), beside thresher on the same;
FAISS's exact binary multi-index hash (the index DESIGN.md suggests) on the first 200,000.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
RADIUS = 10


def planted(n: int, seed: int = 0):
    """n uniform hashes, about a tenth of them in planted groups: (hashes, pairs, distances)."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64 - 1, n, dtype=np.uint64)
    sizes = rng.integers(2, 11, n // 50)
    starts = np.cumsum(np.r_[0, sizes[:-1]])
    keep = starts + sizes <= n
    pairs = []
    for s, k in zip(starts[keep], sizes[keep], strict=True):
        for m in range(1, k):
            flips = rng.choice(64, int(rng.integers(0, RADIUS + 1)), replace=False)
            h[s + m] = h[s] ^ np.uint64(int(np.sum(np.uint64(1) << flips.astype(np.uint64))))
        members = np.arange(s, s + k)
        a, b = np.triu_indices(k, 1)
        pairs.append(np.stack([members[a], members[b]], axis=1))
    pairs = np.concatenate(pairs)
    d = np.bitwise_count(h[pairs[:, 0]] ^ h[pairs[:, 1]])
    return h, pairs[d <= RADIUS], d[d <= RADIUS]


class PeakRSS:
    def __init__(self):
        self.me, self.peak = psutil.Process(), 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.me.memory_info().rss)
            self._stop.wait(0.05)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return self.peak / 2**20


def run_thresher(h):
    from thresher.clean.duplicates import hash_pairs

    rss = PeakRSS()
    t = time.perf_counter()
    p = hash_pairs(h, RADIUS)
    return p, time.perf_counter() - t, rss.stop()


def run_imagededup(h):
    import logging

    from imagededup.methods import PHash

    logging.disable(logging.INFO)
    enc = {str(i): f"{int(v):016x}" for i, v in enumerate(h)}
    t = time.perf_counter()
    dup = PHash(verbose=False).find_duplicates(
        encoding_map=enc, max_distance_threshold=RADIUS, search_method="brute_force_cython"
    )
    seconds = time.perf_counter() - t
    found = {(min(int(a), int(b)), max(int(a), int(b))) for a, v in dup.items() for b in v}
    return found, seconds


def run_faiss_mih(h):
    """FAISS's exact multi-index binary hash (4 tables of 16 bits, 2 flips: exact to 11)."""
    import faiss

    codes = np.ascontiguousarray(h.astype(">u8").view(np.uint8).reshape(-1, 8))
    t = time.perf_counter()
    index = faiss.IndexBinaryMultiHash(64, 4, 16)
    index.nflip = 2
    index.add(codes)
    lims, _, ids = index.range_search(codes, RADIUS + 1)
    q = np.repeat(np.arange(len(h)), np.diff(lims).astype(np.int64))
    keep = q < ids
    return set(zip(q[keep].tolist(), ids[keep].tolist(), strict=True)), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--peer-n", type=int, default=20_000)
    ap.add_argument("--faiss-n", type=int, default=200_000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))

    h, want, dist = planted(args.n)
    p, seconds, peak_mb = run_thresher(h)
    found = set(zip(p.i.tolist(), p.j.tolist(), strict=True))
    hit = np.array([(a, b) in found for a, b in want.tolist()])
    by_d = " ".join(f"{d}:{hit[dist == d].mean():.3f}" for d in range(RADIUS + 1))

    small = h[: args.peer_n]
    ps, s_thr, _ = run_thresher(small)
    mine = set(zip(ps.i.tolist(), ps.j.tolist(), strict=True))
    theirs, s_dedup = run_imagededup(small)
    mid = h[: args.faiss_n]
    pm, s_mid, _ = run_thresher(mid)
    mine_mid = set(zip(pm.i.tolist(), pm.j.tolist(), strict=True))
    faiss_pairs, s_faiss = run_faiss_mih(mid)
    lines = [
        f"Command: `.venv/bin/python bench/near_duplicates.py --n {args.n} --peer-n {args.peer_n}`",
        "",
        f"{args.n:,} uniform 64-bit hashes with {len(want):,} planted pairs within Hamming "
        f"distance {RADIUS}; 2 cores.",
        "",
        "| search | hashes | seconds | peak RSS MB | pairs returned | planted-pair recall |",
        "|---|---|---|---|---|---|",
        f"| thresher `hash_pairs` (sorted random permutations) | {args.n:,} | {seconds:.1f} | "
        f"{peak_mb:.0f} | {len(p):,} | {hit.mean():.4f} |",
        "",
        f"Recall by planted distance: {by_d}.",
        "",
        "Side by side on the first hashes of the same set (imagededup `find_duplicates`, "
        "`brute_force_cython`):",
        "",
        "| search | hashes | seconds | pairs | pairs in common | ratio |",
        "|---|---|---|---|---|---|",
        f"| imagededup | {args.peer_n:,} | {s_dedup:.1f} | {len(theirs):,} | "
        f"{len(mine & theirs):,} | 1.0x |",
        f"| thresher (exact path up to 20,000 rows, permutations above) | {args.peer_n:,} | "
        f"{s_thr:.1f} | {len(mine):,} | {len(mine & theirs):,} | {s_dedup / s_thr:.0f}x faster |",
        f"| FAISS `IndexBinaryMultiHash` (exact; 4 x 16 bits, 2 flips) | {args.faiss_n:,} | "
        f"{s_faiss:.1f} | {len(faiss_pairs):,} | {len(mine_mid & faiss_pairs):,} | 1.0x |",
        f"| thresher | {args.faiss_n:,} | {s_mid:.1f} | {len(mine_mid):,} | "
        f"{len(mine_mid & faiss_pairs):,} | {s_faiss / s_mid:.0f}x faster |",
    ]
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        from scan import _write_section

        _write_section(HERE / "RESULTS.md", "near_duplicates", md)


if __name__ == "__main__":
    main()
