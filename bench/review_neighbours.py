"""How long a reviewer waits for a suspect's nearest neighbours, at catalog scale.

    .venv/bin/python bench/review_neighbours.py [--n 1000000]   # writes its section of RESULTS.md

Random L2-normalised float16 embeddings in a memory-mapped .npy of MobileNetV2's width (1280),
as the catalog stores them. Measured: one brute-force pass over the memmap (what
`thresher review` answers with while its index builds), the background build of the FAISS
index (thresher.knn.knn_index: IVF-PQ above 200,000 rows), and one query on it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    from scan import _write_section

    from thresher.catalog import EmbeddingRows
    from thresher.knn import knn_index
    from thresher.review.evidence import neighbours

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1280)
    args = ap.parse_args()
    n, dim = args.n, args.dim
    with tempfile.TemporaryDirectory(dir=HERE / "out") as tmp:
        path = Path(tmp) / "emb.npy"
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
        rng = np.random.default_rng(0)
        for s in range(0, n, 50_000):
            x = rng.standard_normal((min(50_000, n - s), dim), dtype=np.float32)
            mm[s : s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        mm.flush()
        del mm
        m = np.load(path, mmap_mode="r")
        ids = np.arange(n)
        brute = []
        for q in (5, 77, 123_456 % n):
            t = time.perf_counter()
            neighbours(None, m, ids, q, 8)
            brute.append(time.perf_counter() - t)
        t = time.perf_counter()
        index = knn_index(EmbeddingRows(m, ids))
        build = time.perf_counter() - t
        fast = []
        for q in range(0, n, max(1, n // 50)):
            t = time.perf_counter()
            neighbours(index, m, ids, q, 8)
            fast.append(time.perf_counter() - t)
    kind = "exact (IndexFlatIP)" if n <= 200_000 else "IVF-PQ, 32 bytes a row"
    md = "\n".join(
        [
            f"## Review: nearest neighbours of one suspect among {n:,} embeddings ({dim}-d)",
            "",
            "`.venv/bin/python bench/review_neighbours.py"
            + (f" --n {n}" if n != 1_000_000 else "")
            + "` (2-core machine, by hand)",
            "",
            "| step | time |",
            "|---|---|",
            f"| brute force over the memmap (while the index builds), median of 3 | "
            f"{statistics.median(brute):.2f} s |",
            f"| index build, once, in the background at server start ({kind}) | {build:.1f} s |",
            f"| one query on the index, median of {len(fast)} | "
            f"{1000 * statistics.median(fast):.1f} ms |",
        ]
    )
    print(md)
    _write_section(HERE / "RESULTS.md", "review_neighbours", md)


if __name__ == "__main__":
    main()
