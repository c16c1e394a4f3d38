"""Web-like JPEGs for the benchmarks: drawn scenes, 500-3000 px, made once and cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from thresher.demo import CLASSES, draw_object


def make_jpegs(out: Path, n: int, seed: int = 0) -> list[Path]:
    """N JPEGs with sides uniform in 500-3000 px and web-typical quality 75-92."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = list(CLASSES)
    paths = []
    for i in range(n):
        p = out / f"web_{i:06d}.jpg"
        paths.append(p)
        w, h = (int(v) for v in rng.integers(500, 3001, 2))
        q = int(rng.integers(75, 93))
        if not p.exists():
            draw_object(labels[i % len(labels)], w, h, rng).save(p, "JPEG", quality=q)
    return paths
