"""One batch of files, measured: read, checksum, decode, hash, statistics, and then embedded.

The worker side of the scan, shared by both engines (local processes and Ray actors): pure of
any catalog access, so a batch can run anywhere and come back as rows. A `FileBatch` is what
a worker is sent, a `Measured` what it sends back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image

from thresher.files import DEFAULT_MAX_FILE_BYTES, FileRefused, read_regular
from thresher.images import DecodeIssue, decode
from thresher.scan import hashes, quality


class FileToMeasure(NamedTuple):
    """One file of a worker's batch, as the listing saw it."""

    path: str  # relative to the batch's root
    label: str | None
    size_bytes: int | None
    mtime_ns: int | None


@dataclass(frozen=True)
class FileBatch:
    """A worker's job: files under `root` and how to measure them."""

    root: str
    items: list[FileToMeasure]
    view_px: int
    max_image_pixels: int
    embed_side: int | None  # the embedder's input side; None = no embedding thumbnails
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES


@dataclass
class Measured:
    """A measured batch: one catalog row per file, and the thumbnails to embed.

    `pixels` is (n_ok, side, side, 3) uint8, one per decoded file; `ok_index` says which
    rows they belong to (empty when nothing is to be embedded).
    """

    rows: list[dict]
    pixels: np.ndarray
    ok_index: np.ndarray


def measure_files(batch: FileBatch) -> Measured:
    """Read, decode and measure a batch of files (in a worker).

    Files are read through `read_regular`: regular files only, the size checked before a
    byte is read (a larger one is `oversized`), so no file can block or exhaust a worker.
    """
    rows, decoded, ok_rows = [], [], []
    for f in batch.items:
        path = f.path
        row = {"path": path, "label": f.label, "size_bytes": f.size_bytes, "mtime_ns": f.mtime_ns}
        rows.append(row)
        try:
            data = read_regular(os.path.join(batch.root, path), batch.max_file_bytes)
        except FileRefused as e:
            row.update(status=e.status, reason=e.reason)
            continue
        row["size_bytes"] = len(data)
        row["checksum"] = hashes.checksum(data)
        try:
            d = decode(data, batch.view_px, batch.max_image_pixels)
        except DecodeIssue as issue:
            row.update(status=issue.status, reason=issue.reason, **issue.facts)
            continue
        row.update(
            status="ok", reason=None, format=d.format, mode=d.mode, width=d.width, height=d.height
        )
        decoded.append(d)
        ok_rows.append(len(rows) - 1)
    measures, pixels = measure_decoded(decoded, batch.embed_side)
    for i, m in zip(ok_rows, measures, strict=True):
        rows[i].update(m)
    ok_index = np.array(ok_rows if batch.embed_side else [], dtype=np.int64)
    return Measured(rows=rows, pixels=pixels, ok_index=ok_index)


def measure_decoded(decoded: list, embed_side: int | None = None) -> tuple[list[dict], np.ndarray]:
    """The hash+statistics stage: hashes, blank statistics, effective resolution per view.

    Per image only the cheap thumbnails are made; hashes and statistics run once per batch.
    Returns one dict of catalog columns per view, and the embedding thumbnails (or none).
    """
    if not decoded:
        return [], np.zeros((0, 1, 1, 3), np.uint8)
    t32, t98, thumbs, pix, slopes_eff, pixel_sums = [], [], [], [], [], []
    for d in decoded:
        small = hashes.hash_view(d.view)
        pixel_sums.append(hashes.pixel_checksum(small, d.width, d.height))
        a, b = hashes.hash_thumbnails(small.convert("L"))
        t32.append(a)
        t98.append(b)
        thumbs.append(quality.stats_thumbnail(small))
        slopes_eff.append(quality.effective_short_side(d.view, min(d.width, d.height)))
        if embed_side:
            src = small if min(small.size) >= embed_side else d.view
            pix.append(np.asarray(src.resize((embed_side, embed_side), Image.Resampling.BILINEAR)))
    ph = hashes.phash(np.stack(t32)).view(np.int64)
    dh = hashes.dhash(np.stack(t98)).view(np.int64)
    stats = quality.pixel_stats(np.stack(thumbs))
    measures = [
        {
            "pixel_checksum": pixel_sums[j],
            "phash": int(ph[j]),
            "dhash": int(dh[j]),
            **{k: float(v[j]) for k, v in stats.items()},
            "blur_slope": slopes_eff[j][0],
            "effective_short_side": slopes_eff[j][1],
        }
        for j in range(len(decoded))
    ]
    return measures, (np.stack(pix) if pix else np.zeros((0, 1, 1, 3), np.uint8))


def embed_measured(model, measured: Measured, batch_size: int) -> np.ndarray | None:
    """The embeddings of a measured batch's rows (NaN rows for files that did not decode).

    None when there is no model or nothing decoded.
    """
    if model is None or not len(measured.ok_index):
        return None
    from thresher.scan.embed import embed_batch

    emb = np.full((len(measured.rows), model.dim), np.nan, dtype=np.float32)
    batch_size = model.pass_size(batch_size)  # a GPU takes a task's images in one pass
    for i in range(0, len(measured.ok_index), batch_size):
        sl = slice(i, i + batch_size)
        emb[measured.ok_index[sl]] = embed_batch(model, measured.pixels[sl])
    return emb
