"""The GPU paths, in one short script for a lent GPU: AMP, NVML, the CUDA memory guard, the
largest batch by OOM probing, and a real ResNet-50 step rate beside timm's own loop style.

    .venv/bin/python bench/gpu_check.py --out bench/gpu_check.md   # about 5 minutes on an H100

Nothing here runs in the tests (they never need a GPU). Each part prints as it finishes, so a
run cut short still leaves its first parts in the markdown file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def emit(out: Path, text: str) -> None:
    print(text, flush=True)
    with open(out, "a") as f:
        f.write(text + "\n")


def step_rate(model, batch: int, steps: int, amp: bool, channels_last: bool) -> float:
    """Images/s of forward + backward + SGD step on random tensors already on the GPU."""
    import torch

    x = torch.randn(batch, 3, 224, 224, device="cuda")
    y = torch.randint(0, 1000, (batch,), device="cuda")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    for i in range(steps + 10):
        if i == 10:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=HERE / "gpu_check.md")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check needs a CUDA GPU")
    out = args.out
    out.write_text(f"# GPU check ({time.strftime('%Y-%m-%d')})\n\n")
    emit(out, f"`.venv/bin/python bench/gpu_check.py` on {torch.cuda.get_device_name(0)}, "
         f"torch {torch.__version__}, CUDA {torch.version.cuda}\n")  # fmt: skip

    # 1. NVML through the thermal guard's sensor, and doctor's GPU rows.
    from thresher.doctor import gpu_rows
    from thresher.guard.thermal import NvmlSensor

    reading = NvmlSensor(0).read()
    emit(out, f"## NVML\n\nthermal sensor: {reading.temp_c:.0f} C, throttle: "
         f"{', '.join(reading.throttle) or 'none'}")  # fmt: skip
    for what, value, verdict in gpu_rows():
        emit(out, f"- {what}: {value} {verdict}")

    # 2. ResNet-50 step rate (fp32, AMP fp16, AMP + channels_last), a plain loop on tensors.
    import timm

    emit(out, "\n## ResNet-50 training step rate (random tensors on the GPU, batch 128)\n")
    emit(out, "| precision | images/s |\n|---|---|")
    for name, amp, cl in (("fp32", False, False), ("fp16 AMP", True, False),
                          ("fp16 AMP, channels_last", True, True)):  # fmt: skip
        model = timm.create_model("resnet50").cuda().train()
        emit(out, f"| {name} | {step_rate(model, 128, 50, amp, cl):.0f} |")
        del model
        torch.cuda.empty_cache()

    # 3. thresher's loop with fp16 AMP + GradScaler on generated JPEGs: the whole recipe.
    from thresher.config import Recipe
    from thresher.train.loop import train

    data = Path("/tmp/gpu_check_data")
    _make_jpegs(data, 2048)
    r = Recipe(model="resnet50", image_size=224, total_steps=60, warmup_steps=10, batch_size=64,
               grad_accum=1, workers=12, eval_every=60, checkpoint_every=60, log_every=10,
               amp="fp16", grad_checkpointing=False)  # fmt: skip
    t0 = time.perf_counter()
    s = train(r, data, Path("/tmp/gpu_check_run"), progress=False, log=lambda m: None)
    emit(out, f"\n## thresher train, resnet50, fp16 AMP + GradScaler, 60 steps of 64 (JPEGs, "
         f"12 workers)\n\n{s.images_per_s:.0f} images/s over the run "
         f"({time.perf_counter() - t0:.0f} s with start-up and evaluation); events: "
         f"{[e['event'] for e in s.events] or 'none'}")  # fmt: skip
    # The log line's GPU figures (train/system.py: NVML and torch), as the run report draws them.
    from thresher.train import metrics

    last = [x for x in metrics.read(Path("/tmp/gpu_check_run") / metrics.FILE)
            if x["kind"] == "train"][-1]  # fmt: skip
    gpu = {k: v for k, v in last.items() if k.startswith("gpu_") or k.endswith("cpu_percent")}
    emit(out, f"last log line's machine figures: {gpu or 'none (NVML and torch gave nothing)'}")
    s = train(r.model_copy(update={"amp": "bf16"}), data, Path("/tmp/gpu_check_run_bf16"),
              progress=False, log=lambda m: None)  # fmt: skip
    emit(out, f"bf16: {s.images_per_s:.0f} images/s; events: "
         f"{[e['event'] for e in s.events] or 'none'}")  # fmt: skip

    # 4. The CUDA memory guard's rule on a deliberate 64 MB/s leak of GPU tensors.
    from thresher.guard.memory import sustained_growth

    kept, t, y = [], [], []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20:
        kept.append(torch.empty(16 * 2**20, dtype=torch.uint8, device="cuda"))
        t.append(time.monotonic() - t0)
        y.append(torch.cuda.memory_allocated())
        time.sleep(0.25)
    alarm, slope = sustained_growth(np.array(t), np.array(y), 2**20, 10, 8)
    emit(out, f"\n## CUDA memory guard\n\na 64 MB/s leak of GPU tensors: alarm {alarm}, "
         f"slope {slope / 2**20:.1f} MB/s")  # fmt: skip
    del kept
    torch.cuda.empty_cache()

    # 5. doctor's largest batch by real OOM probing.
    from thresher.doctor import largest_batch

    for amp in ("fp16", "off"):
        n, how = largest_batch(Recipe(model="resnet50", image_size=224, amp=amp,
                                      grad_checkpointing=False))  # fmt: skip
        emit(out, f"\nlargest resnet50 batch at 224 px, amp {amp}: {n} ({how})")


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
