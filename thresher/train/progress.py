"""What a run shows while it runs: the progress bar's figures and, when asked, TensorBoard."""

from __future__ import annotations

from pathlib import Path

from thresher.config import Recipe


def tensorboard(r: Recipe, out: Path, log):
    if not r.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log("tensorboard is not installed (pip install tensorboard): metrics.jsonl only")
        return None
    return SummaryWriter(str(out / "tensorboard"))


def tb_write(tb, rec: dict) -> None:
    if tb is None:
        return
    for k, v in rec.items():
        if k not in ("kind", "step") and isinstance(v, int | float):
            tb.add_scalar(k, v, rec["step"])


def step_info(rec: dict) -> str:
    """The progress bar's figures for a training step's record."""
    return f"loss {rec['loss']:.4f}  lr {rec['lr']:.2e}  {rec['images_per_s']:.0f} img/s"
