"""The run's metrics file: one JSON object per line, appended and flushed as the run goes.

Lines carry a `kind`: "train" (step, loss, lr, grad_norm, images_per_s, train_accuracy of
the batches since the last line, and the machine's figures of train/system.py: cpu_percent,
rss_mb, gpu_util_percent, ...), "eval" (accuracy, loss, train_accuracy since the last
evaluation, per-class accuracy, confusion matrix), "event" (a guard or the loop saying what
it did). Every line carries `wall`, the Unix time it was written: the report's clock.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from thresher.files import atomic_write

FILE = "metrics.jsonl"  # in the run folder


def append(path: Path, record: dict) -> None:
    """Append one record, stamped with the wall-clock time, and flush it to disk (a crash
    keeps every line written before)."""
    record = record if "wall" in record else {**record, "wall": round(time.time(), 3)}
    with open(path, "a") as f:
        f.write(json.dumps(record, default=_plain) + "\n")
        f.flush()


def read(path: Path) -> list[dict]:
    """Every complete record (a line cut by a crash is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_after(path: Path, step: int) -> None:
    """Keep the records up to `step`: a resumed run rewrites what came after its checkpoint."""
    kept = [r for r in read(path) if r.get("step", 0) <= step]
    with atomic_write(path) as f:
        f.write("".join(json.dumps(r) + "\n" for r in kept).encode())


def _plain(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
