"""`thresher doctor`: one report of the machine and of a recipe's data pipeline, before a long run.

The machine: Python, torch, CUDA versions; every GPU with its memory, temperature and power
limit (NVML); RAM; free disk. With a recipe and data: the DataLoader's throughput, a leak check
of the augmentation pipeline (RSS/USS slope of the main process and its workers while the
loader runs), and the largest batch that fits: found by real out-of-memory probing on a GPU,
estimated on a CPU (parameters, gradients and optimizer state, plus the activations of one
image measured with forward hooks, against the available memory). Then which side is the
bottleneck: the loader's images/s against the model's training step rate on the device (at
the recipe's batch), and what to change.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from thresher.config import Recipe
from thresher.wording import plural

MB = 2**20


@dataclass
class DoctorReport:
    """Each section a list of (what, value, verdict) rows; verdict is '' when fine."""

    machine: list[tuple[str, str, str]] = field(default_factory=list)
    gpus: list[tuple[str, str, str]] = field(default_factory=list)
    pipeline: list[tuple[str, str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # not wrong, but worth knowing first
    notes: list[str] = field(default_factory=list)  # what to know, nothing wrong
    bottleneck: Bottleneck | None = None  # with a recipe and data


def machine_rows(paths: list[Path]) -> list[tuple[str, str, str]]:
    """Versions, cores, RAM and free disk where the run writes."""
    import psutil
    import timm
    import torch
    import torchvision

    vm = psutil.virtual_memory()
    rows = [
        ("python", platform.python_version(), ""),
        (
            "torch / torchvision / timm",
            f"{torch.__version__} / {torchvision.__version__} / {timm.__version__}",
            "",
        ),  # fmt: skip
        (
            "CUDA (torch build) / available",
            f"{torch.version.cuda or 'none'} / {torch.cuda.is_available()}",
            "",
        ),  # fmt: skip
        ("CPU cores", str(os.cpu_count()), ""),
        (
            "RAM total / available",
            f"{vm.total / 2**30:.1f} GiB / {vm.available / 2**30:.1f} GiB",
            "low" if vm.available < 4 * 2**30 else "",
        ),  # fmt: skip
    ]
    for p in paths:
        p = Path(p)
        while not p.exists() and p != p.parent:
            p = p.parent
        free = shutil.disk_usage(p).free
        rows.append((f"free disk at {p}", f"{free / 2**30:.1f} GiB",
                     "low" if free < 10 * 2**30 else ""))  # fmt: skip
    return rows


def gpu_rows() -> list[tuple[str, str, str]]:
    """Every NVIDIA GPU through NVML: name, memory, temperature, power limit."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as e:  # no driver, no library, no GPU
        return [("GPUs", f"none visible to NVML ({type(e).__name__})", "")]
    rows = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        name = pynvml.nvmlDeviceGetName(h)
        name = name.decode() if isinstance(name, bytes) else name
        mem = pynvml.nvmlDeviceGetMemoryInfo(h)
        temp = pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
        try:
            power = f"{pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000:.0f} W"
        except pynvml.NVMLError:
            power = "n/a"
        rows.append((f"GPU {i}: {name}",
                     f"{mem.total / 2**30:.1f} GiB ({mem.free / 2**30:.1f} free), {temp} C, "
                     f"power limit {power}", "hot" if temp >= 83 else ""))  # fmt: skip
    return rows or [("GPUs", "none", "")]


@dataclass(frozen=True)
class Bottleneck:
    """Which side limits training: the loader or the model's step, by how much, what to do."""

    side: str  # "loader", "model" or "balanced"
    loader_images_per_s: float
    step_images_per_s: float
    advice: str

    @property
    def images_per_s(self) -> float:
        """What the run can reach: the slower of the two."""
        return min(self.loader_images_per_s, self.step_images_per_s)

    @property
    def device_idle_share(self) -> float:
        """The share of the time the device waits for data (0 when the model is the limit)."""
        return max(0.0, 1.0 - self.loader_images_per_s / self.step_images_per_s)


def bottleneck(
    loader_images_per_s: float,
    step_images_per_s: float,
    workers: int,
    cores: int,
    image_size: int,
    batch_size: int,
    margin: float = 0.1,
) -> Bottleneck:
    """The verdict on a loader rate against a step rate (within `margin`: balanced)."""
    lo, st = loader_images_per_s, step_images_per_s
    if lo < (1 - margin) * st:
        need = workers * st / max(lo, 1e-9)  # workers scale about linearly until cores run out
        more = (
            f"raise workers from {workers} to {min(cores - 1, int(np.ceil(need)))} "
            f"(this machine has {cores} cores)"
            if workers < cores - 1
            else f"every core already decodes ({plural(workers, 'worker')} on {cores} cores)"
        )
        advice = (
            f"the loader is the bottleneck: the device waits {1 - lo / st:.0%} of the time. "
            f"{more}; store the images smaller (a short side near {2 * image_size} px decodes "
            "several times faster than a photo's full size); or train at a lower image_size"
        )
        return Bottleneck("loader", lo, st, advice)
    if st < (1 - margin) * lo:
        fewer = max(1, int(np.ceil(workers * st / lo * 1.2)))
        advice = (
            f"the model's step is the bottleneck ({lo / st:.1f}x the data it needs arrives): "
            f"mixed precision (amp: bf16 or fp16), channels_last, a larger batch than "
            f"{batch_size} if it fits, or a smaller model go faster; "
            f"{plural(fewer, 'worker')} would still keep up"
        )
        return Bottleneck("model", lo, st, advice)
    advice = (
        "loader and model are balanced: a faster device or model setting needs more workers, "
        "or smaller stored images, to pay off"
    )
    return Bottleneck("balanced", lo, st, advice)


def loader_check(
    recipe: Recipe, data: Path, batches: int = 30, min_seconds: float = 30.0, interval_s=0.5
) -> dict:
    """Run the recipe's training DataLoader for `batches` batches and at least `min_seconds`:
    images/s, and the memory slope of the main process and of its worst worker (each judged
    after the first 30% of its life, so start-up allocations do not count)."""
    import psutil
    import torch

    from thresher.data.balance import BalancedSampler
    from thresher.data.batch_transforms import BatchAugment, BatchCollate
    from thresher.data.dataset import ImageDataset
    from thresher.data.epochs import EpochBatches
    from thresher.data.manifest import load_manifest
    from thresher.data.transforms import train_transform, train_view_px
    from thresher.guard.memory import theil_sen_slope

    m = load_manifest(data)
    rows = np.nonzero(~m.is_val)[0]
    ds = ImageDataset(m.paths[rows], m.targets[rows], train_transform(recipe),
                      train_view_px(recipe))  # fmt: skip
    sampler = BalancedSampler(m.weights[rows], seed=recipe.seed)
    me = psutil.Process()
    series: dict[int, list[tuple[float, float]]] = {}

    def sample(t0: float) -> None:
        for p in [me, *me.children(recursive=True)]:
            try:
                info = p.memory_full_info()
            except psutil.Error:
                continue
            series.setdefault(p.pid, []).append((time.monotonic() - t0,
                                                 getattr(info, "uss", info.rss)))  # fmt: skip

    # One loader over one unbroken stream of epochs, as the run's: a worker that lives through
    # the whole check shows its trend (a new one per epoch would show only its start-up
    # growth), and no epoch boundary stalls the rate.
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=EpochBatches(sampler, recipe.batch_size), num_workers=recipe.workers,
        # As the run collates: on a CPU the workers also rotate, jitter and normalise, and
        # that is part of what the loader can deliver.
        collate_fn=BatchCollate(BatchAugment.from_recipe(recipe),
                                in_workers=not torch.cuda.is_available()),
    )  # fmt: skip
    n = 0
    t0 = time.monotonic()
    last = t0
    stream = iter(loader)
    try:
        for _batch in stream:  # uint8 (augmented in the workers on a CPU), as the run's
            n += 1
            if time.monotonic() - last >= interval_s:
                sample(t0)
                last = time.monotonic()
            if n >= batches and time.monotonic() - t0 >= min_seconds:
                break
    finally:
        getattr(stream, "_shutdown_workers", lambda: None)()
    seconds = time.monotonic() - t0
    slopes = {}
    for pid, pts in series.items():
        t, y = np.array(pts).T
        keep = t >= t[0] + 0.3 * (t[-1] - t[0])  # past each process's own start-up
        if keep.sum() >= 5:
            slopes[pid] = theil_sen_slope(t[keep], y[keep]) / MB
    main = slopes.pop(me.pid, 0.0)
    return {
        "images_per_s": n * recipe.batch_size / seconds,
        "seconds": seconds,
        "main_mb_per_s": main,
        "worker_mb_per_s": max(slopes.values(), default=0.0),
    }


def activation_bytes_per_image(model, image_size: int) -> int:
    """Bytes of every module output for one image (what backward keeps, roughly), by hooks."""
    import torch

    total = [0]

    def hook(_m, _i, out):
        for t in out if isinstance(out, tuple | list) else [out]:
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        model.train()  # two images: batch norm in training mode needs more than one
        with torch.no_grad():
            model(torch.zeros(2, 3, image_size, image_size))
    finally:
        for h in handles:
            h.remove()
    return total[0] // 2


def largest_batch(recipe: Recipe, n_classes: int = 1000) -> tuple[int, str]:
    """(batch size, how it was found): OOM probing on a GPU, an estimate on a CPU."""
    import psutil
    import timm
    import torch

    model = timm.create_model(recipe.model, num_classes=n_classes)
    params = sum(p.numel() for p in model.parameters())
    states = {"lion": 1, "adamw": 2, "sgd": 1}[recipe.optimizer]
    if torch.cuda.is_available():
        return _probe_cuda(model, recipe), "found by out-of-memory probing on the GPU"
    fixed = params * 4 * (2 + states)  # weights, gradients, optimizer state (float32)
    per_image = 2 * activation_bytes_per_image(model, recipe.image_size)  # + their gradients
    if recipe.grad_checkpointing:
        per_image //= 3  # stages recompute their insides; a rough share, said in the verdict
    budget = 0.8 * psutil.virtual_memory().available - fixed
    return max(int(budget // max(per_image, 1)), 0), (
        f"estimated for the CPU: {params / 1e6:.1f} M parameters, "
        f"{per_image / MB:.1f} MB of activations per image, 80% of the available RAM"
    )


def _probe_cuda(model, recipe: Recipe) -> int:
    import torch

    model = model.cuda().train()
    if recipe.grad_checkpointing and hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
    from thresher.devices import amp_dtype

    dtype = amp_dtype(recipe.amp, "cuda")

    def fits(b: int) -> bool:
        try:
            x = torch.zeros(b, 3, recipe.image_size, recipe.image_size, device="cuda")
            with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                loss = model(x).float().mean()
            loss.backward()
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()

    lo, hi = 0, 1
    while fits(hi) and hi < 65536:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def doctor(
    recipe: Recipe | None = None, data: Path | str | None = None, out: Path | str = "."
) -> DoctorReport:
    """Check the machine; with a recipe (and data), its model and data pipeline too."""
    rep = DoctorReport()
    rep.machine = machine_rows([Path(out)])
    rep.gpus = gpu_rows()
    if recipe is not None:
        n, how = largest_batch(recipe)
        verdict = "too small for the recipe" if n < recipe.batch_size else ""
        rep.pipeline.append((f"largest batch for {recipe.model} at {recipe.image_size} px",
                             f"{n} ({how})", verdict))  # fmt: skip
        if verdict:
            rep.problems.append(
                f"batch_size {recipe.batch_size} does not fit ({n} does): lower it and raise "
                "grad_accum, or turn on grad_checkpointing"
            )
    if recipe is not None:
        import torch

        if not torch.cuda.is_available():
            rep.warnings.append(
                f"no CUDA GPU: {recipe.model} at {recipe.image_size} px will train on the CPU, "
                "many times slower (`thresher cost --measure` times a step here); use a GPU, or "
                "a small model (model: resnet18, image_size: 160) for a trial run"
            )
    if recipe is not None and data is not None:
        c = loader_check(recipe, Path(data))
        rep.pipeline.append(("DataLoader throughput", f"{c['images_per_s']:.0f} images/s with "
                             f"{plural(recipe.workers, 'worker')}", ""))  # fmt: skip
        rep.bottleneck = _step_against_loader(recipe, c["images_per_s"], rep)
        limit = recipe.guards.leak_mb_per_s
        for who, rate in (("main process", c["main_mb_per_s"]),
                          ("worst worker", c["worker_mb_per_s"])):  # fmt: skip
            leak = rate > limit
            rep.pipeline.append((f"memory slope, {who}", f"{rate:+.2f} MB/s over "
                                 f"{c['seconds']:.0f} s", "leak" if leak else ""))  # fmt: skip
            if leak:
                rep.problems.append(
                    f"the augmentation pipeline's {who} grows {rate:.2f} MB/s: at that rate it "
                    f"eats {rate * 3600 / 1024:.1f} GB an hour (check user_transform)"
                )
    return rep


def _step_against_loader(recipe: Recipe, loader_rate: float, rep: DoctorReport) -> Bottleneck:
    """Time the model's step at the recipe's batch on the device; the verdict in the report."""
    from thresher.cost import measure

    step_rate, device = measure(recipe.model, recipe.image_size, recipe.batch_size, steps=3,
                                amp=recipe.amp, log=lambda m: None,
                                channels_last=recipe.channels_last)  # fmt: skip
    b = bottleneck(loader_rate, step_rate, recipe.workers, os.cpu_count() or 1,
                   recipe.image_size, recipe.batch_size)  # fmt: skip
    rep.pipeline.append((f"training step of {recipe.model} on {device}",
                         f"{step_rate:.0f} images/s at batch {recipe.batch_size}", ""))  # fmt: skip
    rep.pipeline.append(("bottleneck", f"{b.side}: {b.images_per_s:.0f} images/s reachable "
                         f"(`thresher cost --loader-rate {loader_rate:.0f}`)",
                         "device waits" if b.side == "loader" else ""))  # fmt: skip
    (rep.warnings if b.side == "loader" else rep.notes).append(b.advice)
    return b
