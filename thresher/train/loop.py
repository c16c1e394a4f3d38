"""`thresher train`: the reported recipe as one readable loop, resumable to the same weights.

Read top to bottom: setup (manifest, model, optimizer, schedule, data), resume, then the loop:
accumulate micro-batches, step, log, evaluate, checkpoint. Everything random is a function of
(seed, epoch, position) or (seed, step), or lives in the global torch RNG that the checkpoint
saves, so a run killed at any point and resumed from its last checkpoint ends with the same
weights as one never interrupted (tests/test_train.py kills a real subprocess to check).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from thresher.config import Recipe, load_yaml
from thresher.data.balance import (
    BalancedSampler,
    minority_classes,
    minority_cutmix,
    smooth_one_hot,
)
from thresher.data.dataset import ImageDataset
from thresher.data.manifest import load_manifest
from thresher.data.transforms import eval_transform, train_transform
from thresher.errors import ThresherError
from thresher.train import checkpoint, metrics
from thresher.train.model import create_model, freeze, lowest_layers, param_groups
from thresher.train.optim import optimizer, scheduler

METRICS = "metrics.jsonl"
RECIPE = "recipe.yaml"


@dataclass
class RunSummary:
    """How the run went: steps, accuracy, speed, and where its files are."""

    out: str
    steps: int = 0
    epochs: float = 0.0
    resumed_from: int | None = None
    val_accuracy: float | None = None
    best_val_accuracy: float | None = None
    images_per_s: float = 0.0
    seconds: float = 0.0
    interrupted: bool = False
    report: str | None = None
    events: list[dict] = field(default_factory=list)


def train(
    recipe: Recipe | Path | str,
    data: Path | str,
    out: Path | str = "runs/run",
    resume: bool = False,
    progress: bool = True,
    log=print,
) -> RunSummary:
    """Train RECIPE on the manifest in DATA, writing checkpoints, metrics and a report to OUT."""
    # -- setup ------------------------------------------------------------------------------------
    r = recipe if isinstance(recipe, Recipe) else load_yaml(Path(recipe), Recipe)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path, latest = out / METRICS, out / checkpoint.LATEST
    if not resume and latest.exists():
        raise ThresherError(
            f"{out} already holds a run: add --resume to go on with it, or choose another --out"
        )
    summary = RunSummary(out=str(out))

    def event(kind: str, message: str, **extra) -> None:
        e = {"kind": "event", "step": step, "event": kind, "message": message, **extra}
        summary.events.append(e)
        metrics.append(metrics_path, e)
        log(f"[{kind}] step {step}: {message}")

    torch.manual_seed(r.seed)
    m = load_manifest(data)
    train_rows, val_rows = np.nonzero(~m.is_val)[0], np.nonzero(m.is_val)[0]
    if len(train_rows) < r.batch_size:
        raise ThresherError(
            f"{len(train_rows)} training images, fewer than one batch ({r.batch_size})"
        )
    n_classes = len(m.classes)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "off": None}[r.amp]
    if amp_dtype is torch.float16 and device.type != "cuda":
        log("fp16 mixed precision needs CUDA: this run is float32 on the CPU (amp: bf16 works)")
        amp_dtype = None
    model = create_model(r, n_classes, log).to(device)
    groups = param_groups(model, r.weight_decay_backbone, r.weight_decay_head)
    opt = optimizer(r, groups)
    sched = scheduler(opt, r)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    to_freeze = lowest_layers(model, r.freeze_groups)
    freeze_at = math.ceil(r.total_steps * (1 - r.freeze_last_fraction))
    view_px = max(r.image_size, 64)
    train_ds = ImageDataset(m.paths[train_rows], m.targets[train_rows], train_transform(r), view_px)
    val_ds = ImageDataset(m.paths[val_rows], m.targets[val_rows], eval_transform(r), view_px)
    weights = m.weights[train_rows] if r.oversample else np.ones(len(train_rows), np.float32)
    sampler = BalancedSampler(weights, seed=r.seed)
    counts = np.bincount(m.targets[train_rows], minlength=n_classes)
    minority = torch.from_numpy(minority_classes(counts, r.minority_below)).to(device)
    mixer = _timm_mixup(r, n_classes) if r.cutmix == "timm" else None
    step, epoch, position, best, frozen = 0, 0, 0, None, False

    # -- resume -----------------------------------------------------------------------------------
    if resume:
        ck = checkpoint.load(latest)
        if ck["classes"] != list(m.classes) or ck["recipe"]["model"] != r.model:
            raise ThresherError(
                f"the checkpoint in {out} is a {ck['recipe']['model']} over "
                f"{len(ck['classes'])} classes; this recipe and manifest are not the same run"
            )
        changed = [k for k, v in r.model_dump(mode="json").items() if ck["recipe"].get(k) != v]
        if changed:
            log(f"resuming with a changed recipe: {', '.join(changed)}")
        model.load_state_dict(ck["model"])
        step, epoch, position, best = ck["step"], ck["epoch"], ck["position"], ck["best"]
        if ck["frozen"]:
            freeze(model, to_freeze)
            frozen = True
        opt.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        checkpoint.set_rng_state(ck["rng"])
        metrics.truncate_after(metrics_path, step)
        summary.resumed_from = step
        log(f"resumed {out} at step {step} (epoch {epoch}, sample {position})")
    else:
        metrics_path.unlink(missing_ok=True)
    sched.step_update(step)
    (out / RECIPE).write_text(_yaml(r))

    def state() -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "epoch": epoch,
            "position": position,
            "best": best,
            "frozen": frozen,
            "rng": checkpoint.rng_state(),
            "classes": list(m.classes),
            "recipe": r.model_dump(mode="json"),
        }

    loader_args = dict(
        batch_size=r.batch_size,
        drop_last=True,
        num_workers=r.workers,
        pin_memory=device.type == "cuda",
        # The loader draws its base seed from this generator, not from the global RNG that
        # dropout uses: creating a loader mid-epoch on resume must not shift dropout's stream.
        generator=torch.Generator().manual_seed(r.seed),
    )

    def batches():
        nonlocal epoch, position
        while True:
            sampler.set_epoch(epoch, position)
            for x, y in torch.utils.data.DataLoader(train_ds, sampler=sampler, **loader_args):
                position += len(y)
                yield x, y
            epoch, position = epoch + 1, 0

    # A first Ctrl-C (or SIGTERM) ends the run at the next step boundary with a checkpoint;
    # a second one stops at once (the last checkpoint stands).
    stop = {"requested": False}

    def request_stop(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        log("stopping after this step (a checkpoint follows); Ctrl-C again to stop now")

    old_handlers = {}
    if threading.current_thread() is threading.main_thread():  # signals reach the main thread
        old_handlers = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    tb = _tensorboard(r, out, log)

    # -- the loop ---------------------------------------------------------------------------------
    t0, images, last_log = time.monotonic(), 0, (time.monotonic(), 0)
    stream = batches()
    bar = _Progress(progress, r.total_steps, step)
    try:
        while step < r.total_steps and not stop["requested"]:
            if not frozen and r.freeze_last_fraction > 0 and step >= freeze_at and to_freeze:
                n = freeze(model, to_freeze)
                frozen = True
                event("freeze", f"froze the {r.freeze_groups} lowest layer groups ({n} tensors)")
            model.train()
            loss_sum = torch.zeros((), device=device)
            for micro in range(r.grad_accum):
                x, y = next(stream)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if mixer is not None:
                    np.random.seed((r.seed * 1_000_003 + step * r.grad_accum + micro) % 2**32)
                    x, soft = mixer(x, y)  # timm's Mixup smooths the labels itself
                else:
                    soft = smooth_one_hot(y, n_classes, r.label_smoothing)
                    if r.cutmix == "minority":
                        rng = np.random.default_rng([r.seed, step, micro])
                        x, soft = minority_cutmix(
                            x, soft, y, minority, r.cutmix_prob, r.cutmix_alpha, rng
                        )
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = model(x)
                loss = torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
                scaler.scale(loss / r.grad_accum).backward()
                loss_sum += loss.detach()
            scaler.unscale_(opt)  # clip what the optimizer will see, not the scaled gradients
            grad_norm = torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.grad is not None],
                r.grad_clip if r.grad_clip else float("inf"),
            )
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            step += 1
            sched.step_update(step)
            images += r.batch_size * r.grad_accum

            if step % r.log_every == 0 or step == r.total_steps:
                now = time.monotonic()
                rate = (images - last_log[1]) / max(now - last_log[0], 1e-9)
                last_log = (now, images)
                rec = {
                    "kind": "train",
                    "step": step,
                    "epoch": epoch,
                    "loss": (loss_sum / r.grad_accum).item(),
                    "lr": opt.param_groups[0]["lr"],
                    "grad_norm": float(grad_norm),
                    "images_per_s": rate,
                    "time": now - t0,
                }
                metrics.append(metrics_path, rec)
                _tb_write(tb, rec)
                bar.update(step, rec)
            if step % r.eval_every == 0 or step == r.total_steps:
                ev = evaluate(model, val_ds, r, device, amp_dtype, n_classes)
                if ev is not None:
                    metrics.append(metrics_path, {"kind": "eval", "step": step, **ev})
                    _tb_write(tb, {"step": step, "val_accuracy": ev["accuracy"]})
                    summary.val_accuracy = ev["accuracy"]
                    if best is None or ev["accuracy"] > best:
                        best = ev["accuracy"]
                        checkpoint.save(out / checkpoint.BEST, state())
                    bar.note(f"step {step}: val accuracy {ev['accuracy']:.4f} (best {best:.4f})")
            if step % r.checkpoint_every == 0 or step == r.total_steps or stop["requested"]:
                checkpoint.save(latest, state())
    finally:
        bar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        if tb is not None:
            tb.close()

    summary.interrupted = step < r.total_steps
    summary.steps = step
    summary.epochs = epoch + position / max(len(sampler), 1)
    summary.best_val_accuracy = best
    summary.seconds = time.monotonic() - t0
    summary.images_per_s = images / max(summary.seconds, 1e-9)
    from thresher.train.report import run_report

    summary.report = str(run_report(out))
    metrics_summary = {k: v for k, v in asdict(summary).items() if k != "events"}
    (out / "summary.json").write_text(_json(metrics_summary))
    return summary


@torch.no_grad()
def evaluate(model, dataset, r: Recipe, device, amp_dtype, n_classes: int) -> dict | None:
    """Accuracy, loss, per-class accuracy and the confusion matrix on the validation split."""
    if len(dataset) == 0:
        return None
    model.eval()
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=r.batch_size, num_workers=r.workers, shuffle=False
    )
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    loss_sum = 0.0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        pred = logits.argmax(dim=1)
        np.add.at(confusion, (y.cpu().numpy(), pred.cpu().numpy()), 1)
    model.train()
    n = confusion.sum()
    per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    return {
        "accuracy": float(np.trace(confusion) / n),
        "loss": loss_sum / n,
        "per_class_accuracy": per_class.round(4).tolist(),
        "confusion": confusion.tolist(),
    }


def _timm_mixup(r: Recipe, n_classes: int):
    from timm.data import Mixup

    if r.batch_size % 2:
        raise ThresherError("cutmix: timm needs an even batch_size")
    return Mixup(
        mixup_alpha=r.mixup_alpha,
        cutmix_alpha=r.cutmix_alpha,
        prob=r.cutmix_prob,
        label_smoothing=r.label_smoothing,
        num_classes=n_classes,
    )


def _tensorboard(r: Recipe, out: Path, log):
    if not r.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log("tensorboard is not installed (pip install tensorboard): metrics.jsonl only")
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _tb_write(tb, rec: dict) -> None:
    if tb is None:
        return
    for k, v in rec.items():
        if k not in ("kind", "step") and isinstance(v, int | float):
            tb.add_scalar(k, v, rec["step"])


class _Progress:
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


def _yaml(r: Recipe) -> str:
    import yaml

    return yaml.safe_dump(r.model_dump(mode="json"), sort_keys=False)


def _json(d: dict) -> str:
    import json

    return json.dumps(d, indent=1, default=str)
