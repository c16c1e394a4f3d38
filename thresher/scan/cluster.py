"""The scan's decode/hash/embed stage on a Ray cluster (`thresher scan --engine ray`).

The same work as the local engine, spread by Ray Data: each batch of files is one row;
actors (one embedder loaded per actor) read, checksum, decode, hash, measure and embed it,
and this process commits each finished batch to the catalog as it streams back, as the local
engine does. So the catalog is the same, a kill loses at most the batches in flight, and a
rerun resumes.

What the cluster needs: every node reads the image root at the same path (a shared file
system), and the `--weights` file if one is given; thresher installed with `pip install
thresher[ray]` on each node. `--address` joins a running cluster (`ray start --head` on
one machine); without it a local Ray starts for the scan and stops after it.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from thresher.errors import ThresherError
from thresher.scan.job import ScanJob
from thresher.scan.measure import embed_measured, measure_files


class _MeasureAndEmbed:
    """A Ray Data actor: loads the embedder once, then measures and embeds batches of files."""

    def __init__(self, embedder: str | None, weights: str | None, embed_batch_size: int):
        self.model = None
        if embedder is not None:
            from thresher.scan.embed import load_embedder

            self.model = load_embedder(embedder, weights)
        self.embed_batch_size = embed_batch_size

    def __call__(self, batch: dict) -> dict:
        out = []
        for blob in batch["args"]:
            measured = measure_files(pickle.loads(blob))
            emb = embed_measured(self.model, measured, self.embed_batch_size)
            out.append(pickle.dumps((measured.rows, emb)))
        return {"result": np.array(out, dtype=object)}


def run_ray(job: ScanJob) -> bool:
    """Measure and embed the job's batches on Ray and commit each; False if interrupted."""
    if not job.todo:
        return True
    try:
        import ray
        import ray.data
    except ImportError:
        raise ThresherError(
            "--engine ray needs Ray: pip install 'thresher[ray]' (here and on every node)"
        ) from None

    started_here = not ray.is_initialized()
    if started_here:
        address, workers = job.address, job.workers
        kwargs = dict(address=address, include_dashboard=False, log_to_driver=False)
        if address is None:  # a local Ray for this scan, kept small
            kwargs.update(num_cpus=workers or os.cpu_count() or 1,
                          object_store_memory=256 * 2**20)  # fmt: skip
        job.log(f"ray: {'joining ' + address if address else 'starting a local Ray'}")
        ray.init(**kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours counts committed files, theirs running tasks
    ctx.execution_options.preserve_order = False
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n_actors = max(1, min(job.workers or cpus, cpus))
    args = [pickle.dumps(b) for b in job.file_batches()]
    ds = ray.data.from_items([{"args": a} for a in args], override_num_blocks=len(args))
    ds = ds.map_batches(
        _MeasureAndEmbed,
        batch_size=1,
        fn_constructor_kwargs={
            "embedder": job.model.spec if job.model is not None else None,
            "weights": str(job.weights) if job.weights else None,
            "embed_batch_size": job.config.embed_batch_size,
        },
        concurrency=n_actors,
        num_cpus=1,
    )
    try:
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=1):
            for blob in batch["result"]:
                job.commit(*pickle.loads(blob))
        return True
    except KeyboardInterrupt:
        return job.interrupted()
    finally:
        if started_here:
            ray.shutdown()
