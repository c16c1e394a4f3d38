"""The training data path before and after issue #13, side by side on the same real JPEGs.

    .venv/bin/python bench/loader.py [--images 96] [--batches 6] [--repeats 3]
    .venv/bin/python bench/loader.py --train [--steps 60] [--repeats 3]

The files: Debian's wallpaper photos (mate-backgrounds, gnome-backgrounds,
plasma-workspace-wallpapers: real JPEGs of 1900x1200 to 5640x3172). The recipe: the
reported one at 224 px (RandomResizedCrop scale 0.5-1, flip, rotation 30, colour jitter 0.2,
ImageNet normalisation). Both paths end in the same thing: a normalised float32 batch in the
training process, on the CPU (no GPU here).

- old: every step per image in the DataLoader workers on PIL images, float32 through the
  worker queues (bench/classic_transforms.py, thresher's transform before #13), JPEGs
  draft-decoded to a short side of at least image_size.
- new: the workers decode (draft-sized to the smallest crop: image_size / sqrt(0.5)), crop and
  flip in uint8; rotation, jitter and normalisation batched in the training process
  (thresher/data/batch_transforms.py), as `thresher train` does.

Two measures, each the best of `--repeats` alternated runs:
- per core: workers=0 and one torch thread, so all the work of a path runs on one core:
  its images/s is its images/s per core.
- the loader: 2 persistent workers (this machine's cores), batch 32: images/s of finished
  batches in the training process.

`--train`: `thresher train` itself before #13 (the commit it started from, unpacked with
`git archive` into a temporary folder) and now, alternated, on the same Fashion-MNIST PNGs
(Debian's dataset-fashion-mnist; 1,536 training images, so an epoch is 24 steps and a run of
60 crosses two epoch boundaries), the bench's CPU recipe (bench/train_fmnist.py: resnet10t at
32 px, batch 64, 2 workers) with the reported augmentation (crop 0.5-1, flip, rotation 30,
jitter 0.2): each run's median and slowest 10-step window, and the best run of each side.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
WALLPAPERS = (Path("/usr/share/backgrounds"), Path("/usr/share/wallpapers"))


def photos(n: int) -> np.ndarray:
    found = sorted(str(p) for root in WALLPAPERS for p in root.rglob("*.jpg"))
    if len(found) < n:
        sys.exit(f"found {len(found)} wallpaper JPEGs, need {n}: apt-get install "
                 "mate-backgrounds gnome-backgrounds plasma-workspace-wallpapers")  # fmt: skip
    pick = np.random.default_rng(0).choice(len(found), n, replace=False)
    return np.array([found[i].encode() for i in sorted(pick)])


def make_path(kind: str, paths: np.ndarray, recipe):
    """(dataset, the batch finisher run in the training process) for `old` or `new`."""
    from classic_transforms import classic_train_transform

    from thresher.data.batch_transforms import BatchAugment
    from thresher.data.dataset import ImageDataset
    from thresher.data.transforms import train_transform, train_view_px

    targets = np.zeros(len(paths), dtype=np.int64)
    if kind == "old":
        ds = ImageDataset(paths, targets, classic_train_transform(recipe), recipe.image_size)
        return ds, lambda batch: batch.image
    ds = ImageDataset(paths, targets, train_transform(recipe), train_view_px(recipe))
    augment = BatchAugment.from_recipe(recipe)
    return ds, lambda batch: augment(batch.image, batch.seed)


def rate(kind: str, paths, recipe, workers: int, batch: int, batches: int) -> float:
    """Images/s of finished normalised batches over `batches` batches (after one warm-up)."""
    import torch

    from thresher.data.balance import BalancedSampler

    ds, finish = make_path(kind, paths, recipe)
    sampler = BalancedSampler(np.ones(len(paths)), seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, drop_last=True,
                                         num_workers=workers,
                                         persistent_workers=workers > 0)  # fmt: skip
    it = iter(loader)
    x = finish(next(it))  # warm-up: workers started, first batch in
    assert x.dtype == torch.float32 and x.shape[1:] == (3, recipe.image_size, recipe.image_size)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        finish(b)
        n += batch
    seconds = time.perf_counter() - t0
    del it, loader
    return n / seconds


BEFORE = "6980b05"  # main when #13's branch started: the data path before it

_RUN = """
import json, sys
from thresher.config import Recipe
from thresher.train.loop import train
s = train(Recipe(**json.loads(sys.argv[3])), sys.argv[1], sys.argv[2], progress=False,
          log=lambda m: None)
print(json.dumps({"images_per_s": s.images_per_s}))
"""


def train_section(steps: int, repeats: int) -> str:
    """`thresher train` before and after #13, alternated, on the same files and recipe."""
    import json
    import shutil
    import subprocess
    import tempfile

    from PIL import Image
    from train_fmnist import read_idx, recipe, write_manifest

    work = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    before = work / "before"
    before.mkdir()
    archive = subprocess.run(["git", "-C", str(HERE.parent), "archive", BEFORE],
                             capture_output=True, check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
    split = {}
    for name, n in (("train", 1536), ("test", 512)):
        x, y = read_idx(name)
        paths = [str(work / "png" / f"{name}_{i:05d}.png") for i in range(n)]
        (work / "png").mkdir(exist_ok=True)
        for i in range(n):
            Image.fromarray(x[i]).save(paths[i])
        split[name] = (np.array(paths), y[:n])
    data = write_manifest(work / "data", *split["train"], split["test"])
    r = recipe(steps, eval_every=10 * steps, checkpoint_every=10 * steps, log_every=10)
    spec = {k: v for k, v in r.model_dump(mode="json").items() if k != "channels_last"}
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    peak = load0
    for rep in range(repeats):
        for side in ("before", "after") if rep % 2 == 0 else ("after", "before"):
            tree = before if side == "before" else HERE.parent
            out = work / f"run_{side}_{rep}"
            env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
            p = subprocess.run([sys.executable, "-c", _RUN, str(data), str(out), json.dumps(spec)],
                               capture_output=True, text=True, env=env, check=True)  # fmt: skip
            recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
            windows = [x["images_per_s"] for x in recs if x["kind"] == "train"][1:]
            res = json.loads(p.stdout.strip().splitlines()[-1])
            res.update(median=float(np.median(windows)), slowest=float(min(windows)))
            runs[side].append(res)
            peak = max(peak, os.getloadavg()[0])
            print(side, res, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    best = {k: max(v, key=lambda x: x["median"]) for k, v in runs.items()}

    def cells(side: str) -> str:
        med = ", ".join(f"{x['median']:.0f}" for x in runs[side])
        low = ", ".join(f"{x['slowest']:.0f}" for x in runs[side])
        return f"{med} | {best[side]['median']:.0f} | {low} | {best[side]['images_per_s']:.0f}"

    ratio = best["after"]["median"] / best["before"]["median"]
    return (
        f"### `thresher train` before and after #13 (CPU, Fashion-MNIST PNGs, {steps} steps "
        "of 64, 2 workers, the reported augmentation)\n\n"
        "| data path | median 10-step window, images/s: runs | best | slowest window: runs "
        "| best run, whole loop |\n|---|---|---|---|---|\n"
        f"| before: per image in the workers, float32, workers made anew each epoch "
        f"| {cells('before')} |\n"
        f"| after: uint8 workers (persistent), rotation + jitter + normalise batched "
        f"| {cells('after')} |\n\n"
        f"after / before (best median window): {ratio:.2f}. Load average at the start / peak: "
        f"{load0:.1f} / {peak:.1f} on {os.cpu_count()} cores (shared with other sessions).\n\n"
        f"`.venv/bin/python bench/loader.py --train --steps {steps} --repeats {repeats}` "
        f"({time.perf_counter() - t0:.0f} s on this {os.cpu_count()}-core machine, CPU)\n"
    )


def main() -> None:
    import torch

    from thresher.config import Recipe

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    ap.add_argument("--train", action="store_true", help="thresher train before and after")
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    if args.train:
        md = train_section(args.steps, args.repeats)
        print(md)
        if not args.no_write:
            from scan import _write_section

            _write_section(HERE / "RESULTS.md", "loader_train", md)
        return
    recipe = Recipe()  # the reported recipe: 224 px, crop 0.5-1, rotation 30, jitter 0.2
    paths = photos(args.images)
    t_start = time.perf_counter()
    load = os.getloadavg()
    best: dict[tuple[str, str], float] = {}
    runs: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.repeats):
        for kind in ("old", "new") if rep % 2 == 0 else ("new", "old"):
            torch.set_num_threads(1)  # one core: the per-core figure
            r1 = rate(kind, paths, recipe, 0, 16, args.batches)
            torch.set_num_threads(os.cpu_count() or 1)
            r2 = rate(kind, paths, recipe, 2, 32, args.batches)
            for what, r in (("core", r1), ("loader", r2)):
                runs.setdefault((kind, what), []).append(r)
                best[(kind, what)] = max(best.get((kind, what), 0.0), r)
            print(kind, f"per core {r1:.1f}, loader {r2:.1f} images/s", flush=True)
    load = f"{load[0]:.1f} / {max(os.getloadavg()[0], load[0]):.1f}"
    fmt = lambda xs: ", ".join(f"{x:.1f}" for x in xs)  # noqa: E731
    md = (
        f"### The training data path, before and after #13 (CPU, {args.images} wallpaper "
        f"JPEGs, the reported recipe at 224 px)\n\n"
        "| path | images/s per core (workers=0, 1 thread): runs | best | loader, 2 workers, "
        "batch 32: runs | best |\n|---|---|---|---|---|\n"
        f"| old: all per image in the workers, float32 batches | {fmt(runs[('old', 'core')])} "
        f"| {best[('old', 'core')]:.1f} | {fmt(runs[('old', 'loader')])} "
        f"| {best[('old', 'loader')]:.1f} |\n"
        f"| new: uint8 crop + flip in the workers, rotation + jitter + normalise batched "
        f"| {fmt(runs[('new', 'core')])} | {best[('new', 'core')]:.1f} "
        f"| {fmt(runs[('new', 'loader')])} | {best[('new', 'loader')]:.1f} |\n\n"
        f"new / old: {best[('new', 'core')] / best[('old', 'core')]:.2f} per core, "
        f"{best[('new', 'loader')] / best[('old', 'loader')]:.2f} for the 2-worker loader. "
        f"Load average at the start / peak: {load} on {os.cpu_count()} cores (shared).\n\n"
        f"`.venv/bin/python bench/loader.py --images {args.images} --batches {args.batches} "
        f"--repeats {args.repeats}` ({time.perf_counter() - t_start:.0f} s on this "
        f"{os.cpu_count()}-core machine, CPU)\n"
    )
    print(md)
    if not args.no_write:
        from scan import _write_section

        _write_section(HERE / "RESULTS.md", "loader", md)


if __name__ == "__main__":
    main()
