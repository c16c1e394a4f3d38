"""Label-error scoring of 1,000,000 embeddings in bounded memory.

    .venv/bin/python bench/label_errors_1m.py        # writes its section of bench/RESULTS.md

Synthetic float16 embeddings in a memory-mapped .npy (as the catalog stores them): 10 classes
of noisy clusters in 64 dimensions, 10% of labels flipped at random. thresher's label_errors
reads them in batches (probe trained on at most 50,000 rows per fold, FAISS IVF k-NN above
200,000 rows). Reported: time, peak RSS (sampled every 50 ms) against the size of the
embeddings file, and F1 against the planted flips.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def make(path: Path, n: int, dim: int = 64, classes: int = 10, flip: float = 0.10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    truth = rng.integers(0, classes, n)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    for s in range(0, n, 100_000):
        t = truth[s : s + 100_000]
        x = centres[t] + 0.9 * rng.normal(size=(len(t), dim)).astype(np.float32)
        mm[s : s + len(t)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    mm.flush()
    given = truth.copy()
    f = rng.random(n) < flip
    given[f] = (truth[f] + rng.integers(1, classes, f.sum())) % classes
    return given, truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from scan import _PeakRSS, _write_section

    from thresher.clean.label_issues import label_errors

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"emb_{args.n}.npy"
    given, truth = make(path, args.n)
    emb = np.load(path, mmap_mode="r")
    peak = _PeakRSS()
    t = time.perf_counter()
    r = label_errors(emb, given, 10)
    seconds = time.perf_counter() - t
    main_mb, _ = peak.stop()
    wrong = given != truth
    tp = int((r.is_issue & wrong).sum())
    p = tp / max(int(r.is_issue.sum()), 1)
    rc = tp / int(wrong.sum())
    f1 = 2 * p * rc / (p + rc) if p + rc else 0.0
    md = "\n".join(
        [
            f"Command: `.venv/bin/python bench/label_errors_1m.py --n {args.n}`",
            "",
            "| embeddings | file (float16) | seconds | peak RSS MB | precision | recall | F1 |",
            "|---|---|---|---|---|---|---|",
            f"| {args.n:,} x 64, 10 classes, 10% flipped | {path.stat().st_size / 2**20:.0f} MB | "
            f"{seconds:.0f} | {main_mb:.0f} | {p:.3f} | {rc:.3f} | {f1:.3f} |",
        ]
    )
    print(md)
    if not args.no_write:
        _write_section(HERE / "RESULTS.md", "label_errors_1m", md)


if __name__ == "__main__":
    main()
