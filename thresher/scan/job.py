"""One scan run, as the engines see it: what to measure, with what, and where each batch goes.

`scan()` (runner.py) lists the source and decides what needs measuring; an engine (local
processes in runner.py, Ray in cluster.py) measures the `ScanJob`'s batches and hands each
back to `ScanJob.commit`. Both engines depend on this module, never on each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from thresher.catalog import Catalog
from thresher.config import ScanConfig
from thresher.progress import ProgressBar
from thresher.scan.embed import Embedder
from thresher.scan.measure import FileBatch, FileToMeasure
from thresher.sources import Entry


@dataclass
class ScanSummary:
    """What a scan did; `statuses` counts the whole catalog after the scan."""

    source: str
    workspace: str
    files: int = 0
    scanned: int = 0
    unchanged: int = 0
    relabelled: int = 0  # unchanged files whose label changed (manifest edited)
    aliases: int = 0
    newly_missing: int = 0
    embedded: int = 0
    embedder: str | None = None
    embed_note: str | None = None
    skipped_extensions: dict[str, int] = field(default_factory=dict)
    unreadable_dirs: list[str] = field(default_factory=list)  # folders that could not be listed
    statuses: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False


@dataclass
class ScanJob:
    """The files to measure and everything an engine needs to measure and commit them."""

    cat: Catalog
    root: Path
    todo: list[Entry]
    config: ScanConfig
    model: Embedder | None  # None: no embeddings
    summary: ScanSummary
    log: Callable[[str], None]
    workers: int | None = None  # None: every core; 0: in this process
    weights: Path | str | None = None  # the embedder's local weights (Ray actors load them)
    address: str | None = None  # a Ray cluster to join; None: a local Ray
    bar: ProgressBar = field(default_factory=lambda: ProgressBar("scan", 0, enabled=False))

    def file_batches(self) -> list[FileBatch]:
        """`todo` cut into the workers' batches."""
        cfg, side = self.config, (self.model.input_side if self.model else None)
        return [
            FileBatch(
                root=str(self.root),
                items=[
                    FileToMeasure(e.path, e.label, e.size_bytes, e.mtime_ns)
                    for e in self.todo[i : i + cfg.batch_size]
                ],
                view_px=cfg.view_px,
                max_image_pixels=cfg.max_image_pixels,
                embed_side=side,
                max_file_bytes=cfg.max_file_bytes,
            )
            for i in range(0, len(self.todo), cfg.batch_size)
        ]

    def commit(self, rows: list[dict], emb: np.ndarray | None) -> None:
        """One measured batch into the catalog: one transaction, counted, the bar advanced."""
        self.cat.write_scanned(rows, emb)
        self.summary.scanned += len(rows)
        if emb is not None:
            self.summary.embedded += int(np.isfinite(emb[:, 0]).sum())
        self.bar.advance(len(rows))

    def interrupted(self) -> bool:
        """Say how to resume after Ctrl-C; False (the engine's result: not done)."""
        self.log(
            f"interrupted: {self.summary.scanned} files committed; run the same command to resume"
        )
        return False
