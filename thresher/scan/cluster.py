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


class _MeasureAndEmbed:
    """A Ray Data actor: loads the embedder once, then measures and embeds batches of files."""

    def __init__(self, embedder: str | None, weights: str | None, embed_batch_size: int):
        self.model = None
        if embedder is not None:
            from thresher.scan.embed import load_embedder

            self.model = load_embedder(embedder, weights)
        self.embed_batch_size = embed_batch_size

    def __call__(self, batch: dict) -> dict:
        from thresher.scan.runner import embed_measured, measure_files

        out = []
        for blob in batch["args"]:
            result = measure_files(*pickle.loads(blob))
            out.append(pickle.dumps(embed_measured(self.model, result, self.embed_batch_size)))
        return {"result": np.array(out, dtype=object)}


def run_batches_ray(
    cat, root, todo, cfg, model, weights, workers, address, progress, summary, log
) -> bool:
    """Measure and embed `todo` on Ray and commit each batch; False if interrupted (Ctrl-C)."""
    if not todo:
        return True
    try:
        import ray
        import ray.data
    except ImportError:
        raise ThresherError(
            "--engine ray needs Ray: pip install 'thresher[ray]' (here and on every node)"
        ) from None
    from thresher.progress import ProgressBar
    from thresher.scan.runner import batch_args, commit_rows

    started_here = not ray.is_initialized()
    if started_here:
        kwargs = dict(address=address, include_dashboard=False, log_to_driver=False)
        if address is None:  # a local Ray for this scan, kept small
            kwargs.update(num_cpus=workers or os.cpu_count() or 1,
                          object_store_memory=256 * 2**20)  # fmt: skip
        log(f"ray: {'joining ' + address if address else 'starting a local Ray'}")
        ray.init(**kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours counts committed files, theirs running tasks
    ctx.execution_options.preserve_order = False
    cpus = int(ray.cluster_resources().get("CPU", 1))
    n_actors = max(1, min(workers or cpus, cpus))
    args = [pickle.dumps(a) for a in batch_args(root, todo, cfg, model)]
    ds = ray.data.from_items([{"args": a} for a in args], override_num_blocks=len(args))
    ds = ds.map_batches(
        _MeasureAndEmbed,
        batch_size=1,
        fn_constructor_kwargs={
            "embedder": model.spec if model is not None else None,
            "weights": str(weights) if weights else None,
            "embed_batch_size": cfg.embed_batch_size,
        },
        concurrency=n_actors,
        num_cpus=1,
    )
    bar = ProgressBar("scan", len(todo), progress, rate_unit="img/s")
    try:
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=1):
            for blob in batch["result"]:
                rows, emb = pickle.loads(blob)
                commit_rows(cat, rows, emb, summary, bar)
        return True
    except KeyboardInterrupt:
        log(f"interrupted: {summary.scanned} files committed; run the same command to resume")
        return False
    finally:
        bar.close()
        if started_here:
            ray.shutdown()
