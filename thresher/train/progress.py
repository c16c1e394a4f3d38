"""What a run shows while it runs: the progress bar and, when asked, TensorBoard."""

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


class ProgressBar:
    """A rich progress bar (step, loss, lr, img/s, ETA), or nothing when progress is off."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.bar = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
        )
        self.bar.start()
        self.task = self.bar.add_task("train", total=total, completed=start, info="")

    def update(self, step: int, rec: dict) -> None:
        if self.bar is not None:
            info = f"loss {rec['loss']:.4f}  lr {rec['lr']:.2e}  {rec['images_per_s']:.0f} img/s"
            self.bar.update(self.task, completed=step, info=info)

    def note(self, message: str) -> None:
        if self.bar is not None:
            self.bar.console.print(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
