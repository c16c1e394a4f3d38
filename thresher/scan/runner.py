"""The scan: every file read once, measured in parallel processes, committed batch by batch.

Resumable by construction: a file is skipped when the catalog already holds it with the same
size and mtime, and every finished batch is one transaction. Killed at any moment, a rerun
redoes at most the batches that were in flight.

Work split: worker processes read, checksum, decode, hash and measure (scan/measure.py:
Pillow, numpy, scipy; no torch). The main process embeds the prepared thumbnails (torch) and
writes the catalog (scan/job.py), so there is one writer and the workers stay light to start.
This module lists the source, decides what to measure and runs the local engine; the Ray
engine (scan/cluster.py) takes the same ScanJob.
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import signal
import sqlite3
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from thresher.catalog import Catalog
from thresher.config import DEFAULT_EMBEDDER, DEFAULT_WORKSPACE, ScanConfig
from thresher.errors import ThresherError
from thresher.files import readable_name
from thresher.progress import ProgressBar
from thresher.scan.job import ScanJob, ScanSummary
from thresher.scan.measure import Measured, embed_measured, measure_files
from thresher.sources import Entry, list_entries, resolve_source

# Statuses worth another try even when the file looks unchanged (the cause may be transient).
_RETRY_STATUSES = {"unreadable", "missing", "broken_symlink"}


# Errors that mean the workspace's disk (or the process's file-size limit) is full.
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def _worker_init(parent_pid: int | None = None) -> None:
    # Ctrl-C is the main process's to handle: it stops submitting, keeps what was committed and
    # tells the user how to resume. Workers that died of it would only print tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)


def die_with_parent(parent_pid: int | None) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (kill -9 of the scan included).

    Without it a killed scan left its workers and multiprocessing's resource tracker running
    for minutes. Elsewhere (no prctl) the pool's own EOF detection is all there is.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the request took effect


def disk_full(e: BaseException) -> bool:
    """True for the errors of a full disk (or RLIMIT_FSIZE): OSError or SQLite's own."""
    if isinstance(e, OSError):
        return e.errno in _DISK_FULL_ERRNOS
    if isinstance(e, sqlite3.OperationalError):
        msg = str(e).lower()
        return "disk is full" in msg or "disk i/o error" in msg
    return False


def scan(
    source: Path | str,
    workspace: Path | str = DEFAULT_WORKSPACE,
    *,
    workers: int | None = None,
    engine: str = "local",
    address: str | None = None,
    embed: bool = True,
    embedder: str = DEFAULT_EMBEDDER,
    weights: Path | str | None = None,
    config: ScanConfig | None = None,
    path_column: str = "path",
    label_column: str = "label",
    progress: bool = True,
    log=print,
) -> ScanSummary:
    """Scan SOURCE (an ImageFolder tree or a CSV/Parquet manifest) into the workspace catalog.

    Every image is read once: checksum, decode (draft-sized), width/height/format/mode,
    pHash and dHash, blank statistics, effective resolution and, when a backbone is
    available, an embedding. Rerunning is incremental: unchanged files are skipped, new or
    changed ones (size/mtime) scanned, vanished ones marked missing.

    `workers=0` runs in this process (no pool); `None` uses every core. `engine="ray"` runs
    the decode/hash/embed stage on a Ray cluster instead (`address`, or a local Ray; see
    scan/cluster.py): the same catalog. `log` receives the one-line notes (embedder
    unavailable, skipped files, interruption).
    """
    if engine not in ("local", "ray"):
        raise ThresherError(f"unknown engine {engine!r}: local or ray")
    t0 = time.monotonic()
    cfg = config or ScanConfig()
    src = resolve_source(source, path_column, label_column)
    cat = Catalog(workspace)
    summary = ScanSummary(
        source=str(src.root if src.kind == "folder" else src.manifest), workspace=str(cat.workspace)
    )
    try:
        _claim_workspace(cat, src)
        listing = list_entries(src)
        summary.files = len(listing.entries)
        summary.skipped_extensions = dict(listing.skipped_extensions)
        if listing.skipped_extensions:
            top = ", ".join(f"{k} x{v}" for k, v in listing.skipped_extensions.most_common(5))
            log(f"skipped {sum(listing.skipped_extensions.values())} non-image files ({top})")
        summary.unreadable_dirs = list(listing.unreadable_dirs)
        if listing.unreadable_dirs:
            named = ", ".join(readable_name(d) for d in listing.unreadable_dirs[:5])
            more = len(listing.unreadable_dirs) - 5
            log(
                f"skipped {len(listing.unreadable_dirs)} folder(s) that cannot be listed "
                f"({named}{f' and {more} more' if more > 0 else ''}): fix their permissions "
                "and rerun to scan them"
            )

        model = None
        if embed:
            model, summary.embed_note = _prepare_embedder(
                cat, embedder, weights, log, cfg.device
            )
            summary.embedder = model.spec if model else None

        known = cat.known()
        # A file judged oversized under other limits (max_file_bytes, max_image_pixels) is
        # judged again under these: raising a limit must bring those files in.
        limits = f"{cfg.max_file_bytes} {cfg.max_image_pixels}"
        retry_oversized = cat.get_meta("scan_limits") not in (None, limits)
        listed = {e.path for e in listing.entries}
        gone = [p for p, k in known.items() if p not in listed and k.status != "missing"]
        summary.newly_missing = cat.mark_missing(gone) if gone else 0

        todo, aliases, issues, relabelled = [], [], [], []
        for e in listing.entries:
            k = known.get(e.path)
            if e.broken or e.special:
                status, reason = (
                    ("broken_symlink", "symlink target does not exist")
                    if e.broken
                    else ("unreadable", "not a regular file (a FIFO, socket or device)")
                )
                if k is None or (k.status, k.mtime_ns) != (status, e.mtime_ns):
                    issues.append(_issue_row(e, status, reason))
                else:
                    summary.unchanged += 1
            elif e.alias_of is not None:
                aliases.append(e)
            elif _needs_scan(e, k, model is not None) or (
                retry_oversized and k.status == "oversized"
            ):
                todo.append(e)
            else:
                summary.unchanged += 1
                if k.label != e.label:
                    relabelled.append((e.path, e.label))
        if relabelled:
            cat.set_labels(relabelled)
            summary.relabelled = len(relabelled)
        if issues:
            cat.write_scanned(issues)
            summary.scanned += len(issues)

        job = ScanJob(
            cat=cat, root=src.root, todo=todo, config=cfg, model=model, summary=summary, log=log,
            workers=workers, weights=weights, address=address,
        )  # fmt: skip
        if todo:
            job.bar = ProgressBar("scan", len(todo), progress, rate_unit="img/s")
        try:
            if engine == "ray":
                from thresher.scan.cluster import run_ray

                done = run_ray(job)
            else:
                done = _run_local(job)
        finally:
            job.bar.close()
        summary.interrupted = not done
        if done:
            cat.set_meta("scan_limits", limits)
        if aliases and not summary.interrupted:
            cat.write_aliases([(_entry_row(e), e.alias_of) for e in aliases])
            summary.aliases = len(aliases)
        summary.statuses = cat.status_counts()
    except (OSError, sqlite3.OperationalError) as e:
        if not disk_full(e):
            raise
        raise ThresherError(
            f"disk full at {cat.workspace} ({e.strerror if isinstance(e, OSError) else e}): "
            f"{summary.scanned} files committed, nothing lost; free some space and rerun the "
            "same command to go on"
        ) from None
    finally:
        cat.close()
    summary.seconds = time.monotonic() - t0
    return summary


def _claim_workspace(cat: Catalog, src) -> None:
    """A workspace catalogues one source; a second one would mix unrelated relative paths."""
    desc = src.describe()
    have = cat.get_meta("source")
    if have is None:
        cat.set_meta("source", desc)
    elif have != desc:
        where = have["manifest"] or have["root"]
        raise ThresherError(
            f"workspace {cat.workspace} already catalogues {where}; "
            "scan this source into another --workspace"
        )


def _prepare_embedder(cat: Catalog, spec: str, weights, log, device: str = "cpu"):
    from thresher.scan.embed import EmbedderUnavailable, load_embedder

    try:
        model = load_embedder(spec, weights, device)
    except EmbedderUnavailable as e:
        note = f"embeddings off: {e}"
        log(note + " (clean's label-error and embedding-based duplicate checks need them)")
        return None, note
    previous = cat.get_meta("embedder")
    if previous is not None and previous != spec:
        log(f"embedder changed ({previous} -> {spec}): every image will be embedded again")
    if previous != spec or cat.get_meta("embedding_dim") != model.dim:
        cat.reset_embeddings(spec, model.dim)
    return model, None


def _needs_scan(e: Entry, k, embedding: bool) -> bool:
    if k is None or k.status in _RETRY_STATUSES or k.status == "alias":
        return True
    if (k.size_bytes, k.mtime_ns) != (e.size_bytes, e.mtime_ns):
        return True
    return embedding and k.status == "ok" and not k.has_embedding


def _run_local(job: ScanJob) -> bool:
    """Measure the job's batches in worker processes and commit each; False if interrupted."""
    if not job.todo:
        return True
    batches = job.file_batches()
    n_workers = (os.cpu_count() or 1) if job.workers is None else job.workers

    def commit(measured: Measured) -> None:
        job.commit(measured.rows, embed_measured(job.model, measured, job.config.embed_batch_size))

    try:
        if n_workers == 0:
            for b in batches:
                commit(measure_files(b))
            return True
        # spawn, not fork: the main process may hold torch's thread pools, which fork breaks.
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=n_workers,
            mp_context=ctx,
            initializer=_worker_init,
            initargs=(os.getpid(),),
        ) as pool:
            pending = set()
            queue = iter(batches)
            try:
                # Bounded in-flight work keeps memory flat whatever the crawl size.
                for b in queue:
                    pending.add(pool.submit(measure_files, b))
                    if len(pending) >= 2 * n_workers:
                        break
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        commit(fut.result())
                        nxt = next(queue, None)
                        if nxt is not None:
                            pending.add(pool.submit(measure_files, nxt))
            except KeyboardInterrupt:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            except BaseException:
                # A disk-full commit (or any error) must not leave the workers measuring for
                # nobody: stop them now rather than when the pool's exit drains the queue.
                _stop_workers(pool)
                raise
        return True
    except KeyboardInterrupt:
        return job.interrupted()
    except BrokenProcessPool:
        raise ThresherError(
            f"a scan worker process died ({job.summary.scanned} files committed, nothing lost): "
            "rerun to resume; --workers 0 scans in one process if it keeps happening"
        ) from None


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(timeout=10)


def _entry_row(e: Entry) -> dict:
    return {"path": e.path, "label": e.label, "size_bytes": e.size_bytes, "mtime_ns": e.mtime_ns}


def _issue_row(e: Entry, status: str, reason: str) -> dict:
    return {**_entry_row(e), "status": status, "reason": reason}
