"""The k-nearest-neighbour index over embedding rows (FAISS inner product), built in batches.

A neutral leaf: clean's label-error vote and the review page's "nearest pictures" search the
same kind of index, so neither borrows the other's.
"""

from __future__ import annotations

import numpy as np

EXACT_KNN_UP_TO = 200_000  # above, an IVF index: exact search over N x N is hours at 1M
_BATCH = 16384  # rows converted to float32 at a time: a memmap of millions stays on disk


def float32_rows(embeddings, idx) -> np.ndarray:
    """Rows `idx` of `embeddings` (a float16 memmap is fine) as a contiguous float32 array."""
    return np.ascontiguousarray(embeddings[idx], dtype=np.float32)


def knn_index(embeddings, seed: int = 0):
    """A FAISS inner-product index over the rows of `embeddings` (index position = row).

    Exact up to EXACT_KNN_UP_TO rows; above, inverted lists (~4 sqrt(N) clusters, 8 probed per
    query) over product-quantised codes of 32 bytes a vector, whatever the dimension: the
    index stays ~32 MB per million rows instead of a float32 copy (5 GB at 1280-d).
    """
    import faiss

    n, dim = embeddings.shape
    if n <= EXACT_KNN_UP_TO:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = int(4 * np.sqrt(n))
        m = max(d for d in range(1, 33) if dim % d == 0)
        nbits = int(min(8, np.log2(max(n // 40, 2))))
        index = faiss.IndexIVFPQ(
            faiss.IndexFlatIP(dim), dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT
        )
        sample = np.sort(np.random.default_rng(seed).choice(n, min(n, 40 * nlist), replace=False))
        index.train(float32_rows(embeddings, sample))
        index.nprobe = 8
    for s in range(0, n, _BATCH):
        index.add(float32_rows(embeddings, np.arange(s, min(n, s + _BATCH))))
    return index
