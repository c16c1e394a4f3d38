"""Training samples that a user transform could not handle: counted across worker processes.

Each DataLoader worker records into shared memory (a counter and the first failure's message),
so the main process's guard (guard/samples.py) sees the count of every worker.
"""

from __future__ import annotations

import multiprocessing as mp


class SkippedSamples:
    """How many samples were skipped, and what the first one was (path and error)."""

    def __init__(self):
        self._count = mp.Value("q", 0)
        self._first = mp.Array("c", 1024)

    def record(self, path: str, error: str) -> None:
        with self._count.get_lock():
            self._count.value += 1
            if self._count.value == 1:
                self._first.value = f"{error} (first: {path})".encode(errors="replace")[:1023]

    @property
    def count(self) -> int:
        return int(self._count.value)

    @property
    def first(self) -> str:
        return self._first.value.decode(errors="replace")
