"""`thresher cost`: the time and money of a training plan, on several options side by side.

The field report's question: 4 cloud A100s at $4.2/h per GPU, or 2 RTX 4090s at home? The
answer is arithmetic on a few inputs, every one of them visible and changeable:

    images    = images x epochs  (or steps x global batch)
    rate      = min(step rate per GPU, loader rate per process)  (the slower side: doctor)
    img/s     = rate x GPUs x scaling               (scaling applies from 2 GPUs on)
    hours     = images / img/s / 3600
    rent      = hours x GPUs x price per GPU-hour
    energy    = hours x (GPUs x watts per GPU + system watts) / 1000      (kWh)
    power     = energy x electricity price per kWh
    hardware  = purchase price x GPUs x hours / (lifetime years x 8760)  (the share of its life)
    total     = rent + power + hardware

The rate per GPU comes from `--measure` (real training steps of the model on this machine's
device) or from RATES, ResNet-50 at 224 px with mixed precision, each with its source; for
another model or image size it is scaled by forward FLOPs (a first-order guess: measure when it
matters). Prices are inputs with defaults in config.CostOption, never constants in the code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from thresher.config import CostOption, CostPlan
from thresher.errors import ThresherError

HOURS_PER_YEAR = 365 * 24


@dataclass(frozen=True)
class Rate:
    """Training throughput of one GPU (ResNet-50, 224 px, mixed precision), its power, source."""

    images_per_s: float
    watts: float  # board power (TDP): what the card draws at full training load, about
    source: str


_NV = (
    "NVIDIA DeepLearningExamples, PyTorch ResNet50 v1.5 README, training performance, "
    "mixed precision, 1 GPU (pytorch-21.03 NGC)"
)
_SG = (
    "server-gear.com 'RTX4090 x4 exhaustive tf_cnn_benchmarks', ResNet-50 fp16, batch 256, "
    "1 GPU (TensorFlow, NGC 23.02)"
)
RATES: dict[str, Rate] = {
    "A100": Rate(2470, 400, _NV + ", DGX A100 80GB; 8 GPUs: 16,621 img/s (x6.72)"),
    "V100": Rate(1200, 300, _NV + ", DGX-1 V100 16GB; 8 GPUs: 8,322 img/s (x6.93)"),
    "RTX 4090": Rate(1776, 450, _SG + "; 2 GPUs: 3,357 img/s (x1.89)"),
    "RTX 3090": Rate(1182, 350, _SG + "; 2 GPUs: 2,283 img/s (x1.93)"),
}
REFERENCE = ("resnet50", 224)  # what RATES measured


@dataclass(frozen=True)
class Estimate:
    """One option's time and money for the plan."""

    option: str
    gpus: int
    images_per_s: float
    hours: float
    rent: float
    kwh: float
    power: float
    hardware: float
    loader_bound: bool = False  # the loader, not the GPU's step, set the rate

    @property
    def total(self) -> float:
        return self.rent + self.power + self.hardware


def plan_images(plan: CostPlan) -> float:
    """Images the plan trains on: images x epochs, or steps x global batch."""
    if plan.steps is not None:
        return float(plan.steps * plan.batch_size)
    return float(plan.images * plan.epochs)


def estimate(
    images: float,
    option: CostOption,
    rate_per_gpu: float,
    watts: float,
    loader_rate: float | None = None,
) -> Estimate:
    """The arithmetic of the module docstring for one option (`loader_rate`: per process)."""
    if rate_per_gpu <= 0:
        raise ThresherError(f"{option.name}: a throughput of {rate_per_gpu} img/s cannot finish")
    loader_bound = loader_rate is not None and loader_rate < rate_per_gpu
    if loader_bound:
        rate_per_gpu = loader_rate
    rate = rate_per_gpu * option.count * (option.scaling if option.count > 1 else 1.0)
    hours = images / rate / 3600
    kwh = hours * (option.count * watts + option.system_watts) / 1000
    life_hours = option.lifetime_years * HOURS_PER_YEAR
    return Estimate(
        option=option.name,
        gpus=option.count,
        images_per_s=rate,
        hours=hours,
        rent=hours * option.count * option.price_per_gpu_hour,
        kwh=kwh,
        power=kwh * option.electricity_per_kwh,
        hardware=option.purchase_price_per_gpu * option.count * hours / life_hours,
        loader_bound=loader_bound,
    )


def relative_flops(model: str, image_size: int) -> float:
    """Forward FLOPs of MODEL at IMAGE_SIZE over ResNet-50's at 224 px (counted, not looked up)."""
    return _forward_flops(model, image_size) / _forward_flops(*REFERENCE)


def _forward_flops(model: str, image_size: int) -> float:
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if not timm.is_model(model):
        raise ThresherError(f"unknown timm model {model!r}")
    with torch.device("meta"):  # no memory, no time: shapes are enough to count
        net = timm.create_model(model, num_classes=1000).eval()  # batch norm on a batch of 1
        x = torch.empty(1, 3, image_size, image_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x)
    return float(counter.get_total_flops())


def measure(
    model: str,
    image_size: int,
    batch_size: int,
    steps: int = 5,
    amp: str = "fp16",
    log=print,
    channels_last: bool | str = "auto",
) -> tuple[float, str]:
    """Time real training steps (forward, loss, backward, Lion step) of MODEL on this device.

    Random-init weights and random pixels on the device: this is the model's compute rate, not
    the data pipeline's (`thresher doctor --recipe --data` times that). Returns images/s and
    the device's name.
    """
    import timm
    import torch
    import torch.nn.functional as F
    from timm.optim import Lion

    if not timm.is_model(model):
        raise ThresherError(f"unknown timm model {model!r}")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    name = torch.cuda.get_device_name(0) if cuda else f"CPU ({_cpu_name()})"
    from thresher.devices import amp_dtype

    dtype = amp_dtype(amp, device.type)  # as the training loop does
    net = timm.create_model(model, num_classes=1000).to(device).train()
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    from thresher.train.model import use_channels_last

    if use_channels_last(channels_last, device, net):  # as `thresher train` would run it
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = Lion(net.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    y = torch.randint(0, 1000, (batch_size,), device=device)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(net(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    log(f"measuring {model} at {image_size} px, batch {batch_size}, on {name}")
    for _ in range(2):  # warm-up: allocator, cuDNN autotune
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - t0), name


def _cpu_name() -> str:
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cost(plan: CostPlan, measured: tuple[float, str] | None = None) -> list[Estimate]:
    """Every option of the plan, side by side; with `measured` (img/s, device) one more row."""
    images = plan_images(plan)
    scale = None
    rows = []
    for opt in plan.options:
        if opt.images_per_s_per_gpu is not None:
            rate = opt.images_per_s_per_gpu
        else:
            if opt.gpu not in RATES:
                raise ThresherError(
                    f"option {opt.name!r}: no throughput for gpu {opt.gpu!r} (known: "
                    f"{', '.join(RATES)}); give images_per_s_per_gpu, or use --measure"
                )
            if scale is None:
                scale = relative_flops(plan.model, plan.image_size)
            rate = RATES[opt.gpu].images_per_s / scale
        watts = opt.watts_per_gpu if opt.watts_per_gpu is not None else _table_watts(opt)
        rows.append(estimate(images, opt, rate, watts, plan.loader_images_per_s))
    if measured is not None:
        rate, device = measured
        here = CostOption(
            name=f"this machine: {device}",
            gpu="measured",
            count=1,
            watts_per_gpu=plan.machine_watts,
            electricity_per_kwh=plan.machine_electricity_per_kwh,
        )
        rows.append(estimate(images, here, rate, plan.machine_watts, plan.loader_images_per_s))
    return rows


def _table_watts(opt: CostOption) -> float:
    return RATES[opt.gpu].watts if opt.gpu in RATES else 0.0


def format_hours(hours: float) -> str:
    """'3.2 h'; '7.0 days' from 48 hours on; minutes and seconds under an hour (never '0.0 h')."""
    if hours >= 48:
        return f"{hours / 24:.1f} days"
    if hours >= 1:
        return f"{hours:.1f} h"
    if hours * 60 >= 1:
        return f"{hours * 60:.0f} min"
    return f"{max(hours * 3600, 1):.0f} s"
