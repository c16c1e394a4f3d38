"""Which device a process computes on, and in which precision (doctor, cost, train, ddp-check).

A leaf: torch is imported inside the functions, so importing this costs nothing.
"""

from __future__ import annotations


def amp_dtype(setting: str, device_type: str):
    """The autocast dtype of a recipe's `amp` on a device; None is float32.

    fp16 needs CUDA (a GradScaler and tensor cores): on a CPU it is float32. bf16 runs on both.
    """
    import torch

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "off": None}[setting]
    return None if dtype is torch.float16 and device_type != "cuda" else dtype


def default_device(local_rank: int = 0):
    """This process's GPU when there is one (its local rank's), else the CPU."""
    import torch

    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def resolve_device(setting: str):
    """'auto' (the GPU when there is one), 'cpu' or 'cuda' as a torch.device; a clear error
    when CUDA is asked for and there is none."""
    import torch

    from thresher.errors import ThresherError

    if setting not in ("auto", "cpu", "cuda"):
        raise ThresherError(f"--device must be auto, cpu or cuda, not {setting!r}")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ThresherError("--device cuda: no CUDA GPU is visible here (use auto or cpu)")
    cuda = setting == "cuda" or (setting == "auto" and torch.cuda.is_available())
    return torch.device("cuda") if cuda else torch.device("cpu")
