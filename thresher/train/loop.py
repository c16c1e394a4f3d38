"""`thresher train`: the reported recipe as one readable loop, resumable to the same weights.

Read top to bottom: setup (manifest, model, optimizer, schedule, data), resume, then the loop:
accumulate micro-batches, step, log, evaluate, checkpoint. Everything random is a function of
(seed, epoch, position) or (seed, step), or lives in the global torch RNG that the checkpoint
saves, so a run killed at any point and resumed from its last checkpoint ends with the same
weights as one never interrupted (tests/test_train.py kills a real subprocess to check).
"""

from __future__ import annotations

import math
import os
import signal
import sys
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
from thresher.guard.memory import HostMemoryWatch, sustained_growth
from thresher.guard.numeric import GuardStop, NumericGuard, all_finite
from thresher.guard.progress import diagnose_plateau, overfitting, plateaued, regularisers_off
from thresher.train import checkpoint, distributed, metrics
from thresher.train.model import amp_dtype, create_model, freeze, lowest_layers, param_groups
from thresher.train.optim import optimizer, scheduler

METRICS = "metrics.jsonl"
RECIPE = "recipe.yaml"
# Events about one process's own machine: every rank reports its own. The rest (numeric,
# freeze, progress) are the same on every rank and rank 0 says them once.
_RANK_EVENTS = {"memory_leak", "recycle_workers", "gpu_memory_growth", "thermal_warn",
                "thermal_pause", "thermal_resume"}  # fmt: skip


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
    stopped_by: str | None = None  # a guard's diagnosis when a guard ended the run
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
    ranks, device = distributed.init()
    rank_log = log  # what only this rank knows (its memory, its GPU) is said by every rank
    if not ranks.main:
        log = _silent  # noqa: F811 - the rest is said once, by rank 0
        rank_log = lambda m: print(f"[rank {ranks.rank}] {m}", file=sys.stderr, flush=True)  # noqa: E731
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
        if ranks.main:
            metrics.append(metrics_path, e)
            log(f"[{kind}] step {step}: {message}")
        elif kind in _RANK_EVENTS:
            rank_log(f"[{kind}] step {step}: {message}")

    distributed.seed_model(r.seed, ranks.rank)
    m = load_manifest(data)
    train_rows, val_rows = np.nonzero(~m.is_val)[0], np.nonzero(m.is_val)[0]
    if len(train_rows) < r.batch_size:
        raise ThresherError(
            f"{len(train_rows)} training images, fewer than one batch ({r.batch_size})"
        )
    n_classes = len(m.classes)
    amp = amp_dtype(r.amp, device.type)
    if r.amp == "fp16" and amp is None:
        log("fp16 mixed precision needs CUDA: this run is float32 on the CPU (amp: bf16 works)")
    model = create_model(r, n_classes, log).to(device)
    if r.sync_batchnorm and ranks.world > 1:
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            log("sync_batchnorm needs CUDA: batch-norm statistics stay per process on CPUs")
    distributed.seed_rank(r.seed, ranks.rank)  # same weights everywhere; now each its stream
    groups = param_groups(model, r.weight_decay_backbone, r.weight_decay_head)
    opt = optimizer(r, groups)
    sched = scheduler(opt, r)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    to_freeze = lowest_layers(model, r.freeze_groups)
    freeze_at = math.ceil(r.total_steps * (1 - r.freeze_last_fraction))
    train_ds, weights = training_data(r, m, train_rows)
    val_ds = ImageDataset(
        m.paths[val_rows], m.targets[val_rows], eval_transform(r), max(r.image_size, 64)
    )
    sampler = BalancedSampler(weights, seed=r.seed, rank=ranks.rank, world=ranks.world)
    ctx = step_context(r, m.targets[train_rows], n_classes, device, amp)
    step, epoch, position, best, frozen = 0, 0, 0, None, False
    g = r.guards
    numeric = NumericGuard(g)
    history: dict[str, list[float]] = {"val": [], "train": [], "loss": []}
    correct, seen = torch.zeros((), device=device, dtype=torch.long), 0
    gpu_memory: tuple[list, list] = ([], [])
    warned: set[str] = set()

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
        if ck.get("world", 1) != ranks.world:  # the same share of the epoch, dealt anew
            position = position * ck.get("world", 1) // ranks.world
            log(f"resuming a {ck.get('world', 1)}-process run with {ranks.world}: the data "
                "order goes on, dropout and augmentation streams start afresh")  # fmt: skip
        if ck["frozen"]:
            freeze(model, to_freeze)
            frozen = True
        opt.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        rngs = ck.get("rng_ranks") or [ck["rng"]]
        checkpoint.set_rng_state(rngs[ranks.rank] if len(rngs) == ranks.world else ck["rng"])
        if len(rngs) != ranks.world:
            torch.manual_seed(distributed.rank_seed(r.seed + step, ranks.rank))
        if "guards" in ck:  # checkpoints from before the guards have no guard state
            numeric.load_state(ck["guards"])
        metrics.truncate_after(metrics_path, step)
        summary.resumed_from = step
        log(f"resumed {out} at step {step} (epoch {epoch}, sample {position})")
    elif ranks.main:
        metrics_path.unlink(missing_ok=True)
    set_lr(sched, opt, step, numeric.lr_scale)
    if ranks.main:
        (out / RECIPE).write_text(_yaml(r))
    net = distributed.wrap(model, ranks, device)  # DDP broadcasts rank 0's weights here

    def state(rngs: list | None = None) -> dict:
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
            "rng_ranks": rngs,  # every rank's RNG state (DDP), else None
            "world": ranks.world,
            "classes": list(m.classes),
            "recipe": r.model_dump(mode="json"),
            "guards": numeric.state(),
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
    tb = _tensorboard(r, out, log) if ranks.main else None
    watch = None
    if g.enabled and g.memory:
        watch = HostMemoryWatch(
            g.memory_interval_s,
            g.memory_warmup_s,
            g.leak_mb_per_s,
            g.leak_sustain_s,
            g.leak_window_s,
            g.tracemalloc,
        ).start()
    thermal = _thermal_guard(g, device, log) if g.enabled else None

    # -- the loop ---------------------------------------------------------------------------------
    t0, images, last_log = time.monotonic(), 0, (time.monotonic(), 0)
    stream = batches()
    bar = _Progress(progress and ranks.main, r.total_steps, step)
    stopping = False  # the stop all ranks agreed on (a local request joins at the step's end)
    numeric.maybe_snapshot(step, model, opt, scaler)  # a good state to fall back on from step 0
    params = list(model.parameters())
    model.train()  # evaluate() puts it back in train mode after each evaluation
    try:
        while step < r.total_steps and not stopping:
            if not frozen and r.freeze_last_fraction > 0 and step >= freeze_at and to_freeze:
                n = freeze(model, to_freeze)
                frozen = True
                net = distributed.wrap(model, ranks, device)  # DDP hooks only what trains
                event("freeze", f"froze the {r.freeze_groups} lowest layer groups ({n} tensors)")
            if g.enabled:
                numeric.begin_step(model)
            loss_sum = torch.zeros((), device=device)
            for micro in range(r.grad_accum):
                x, y = next(stream)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with distributed.no_sync(net, last=micro == r.grad_accum - 1):
                    draw = micro * ranks.world + ranks.rank  # its place in the global step
                    loss, logits = forward_backward(
                        net, x, y, ctx, step, draw, r.grad_accum, scaler
                    )
                loss_sum += loss
                correct += (logits.argmax(dim=1) == y).sum()
                seen += len(y)
            scaler.unscale_(opt)  # clip what the optimizer will see, not the scaled gradients
            if r.grad_clip:  # (frozen parameters have no grad: both skip them)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, r.grad_clip)
            else:  # the norm alone, for the guard and the log: not a x1 pass over every grad
                grad_norm = torch.nn.utils.get_total_norm(
                    [p.grad for p in params if p.grad is not None]
                )
            # The numeric guard: one device sync for loss and grad norm, then skip or roll back.
            # The loss is every rank's mean, the grad norm already all-reduced: one verdict.
            loss_step = distributed.mean(loss_sum / r.grad_accum, ranks)
            verdict = "ok"
            if g.enabled:
                verdict = numeric.check(loss_step, grad_norm, scaler, model)
            if verdict in ("skip", "rollback"):
                scaler.update()  # closes this step's unscale_ for the GradScaler
                opt.zero_grad(set_to_none=True)
                numeric.undo_buffers()
                done = r.batch_size * r.grad_accum
                event(
                    "numeric_skip",
                    f"bad step skipped (loss {numeric.last[0]:.4g}, grad norm "
                    f"{numeric.last[1]:.4g}); its batch: epoch {epoch}, samples "
                    f"{max(position - done, 0)}-{position}",
                )
                if verdict == "rollback":
                    step = numeric.rollback(model, opt, scaler, opt.param_groups[0]["lr"])
                    set_lr(sched, opt, step, numeric.lr_scale)
                    event(
                        "numeric_rollback",
                        f"{g.max_consecutive_bad} bad steps in a row: rolled back to step {step}, "
                        f"learning rate now x{numeric.lr_scale:g} of the schedule",
                    )
                continue
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            step += 1
            set_lr(sched, opt, step, numeric.lr_scale)
            if g.enabled:
                numeric.maybe_snapshot(step, model, opt, scaler)
            images += r.batch_size * r.grad_accum * ranks.world

            if step % r.log_every == 0 or step == r.total_steps:
                now = time.monotonic()
                rate = (images - last_log[1]) / max(now - last_log[0], 1e-9)
                if not g.enabled:  # the numeric guard's sync did not happen: do it here
                    numeric.last = tuple(torch.stack([loss_step, grad_norm]).tolist())
                last_log = (now, images)
                rec = {
                    "kind": "train",
                    "step": step,
                    "epoch": epoch,
                    "loss": numeric.last[0],
                    "lr": opt.param_groups[0]["lr"],
                    "grad_norm": numeric.last[1],
                    "images_per_s": rate,
                    "time": now - t0,
                }
                if ranks.main:
                    metrics.append(metrics_path, rec)
                _tb_write(tb, rec)
                bar.update(step, rec)
                history["loss"].append(rec["loss"])
                if device.type == "cuda":  # GPU memory growth: the host leak's slope logic
                    gpu_memory[0].append(now)
                    gpu_memory[1].append(torch.cuda.memory_allocated())
                    grows, slope = sustained_growth(
                        np.array(gpu_memory[0]), np.array(gpu_memory[1]),
                        g.leak_mb_per_s * 2**20, g.leak_sustain_s, g.leak_window_s,
                    )  # fmt: skip
                    if grows and "gpu" not in warned:
                        warned.add("gpu")
                        event("gpu_memory_growth", f"allocated GPU memory grows "
                              f"{slope / 2**20:.2f} MB/s: tensors kept across steps?")  # fmt: skip
            if step % r.eval_every == 0 or step == r.total_steps:
                train_accuracy = distributed.total(int(correct.item()), ranks) / max(
                    distributed.total(seen, ranks), 1
                )
                correct.zero_()
                seen = 0
                # Rank 0 evaluates; a stop it decides reaches the others at this step's end.
                ev = None
                if ranks.main:
                    ev = evaluate(model, val_ds, r, device, amp, n_classes)
                if ev is not None:
                    ev["train_accuracy"] = train_accuracy
                    metrics.append(metrics_path, {"kind": "eval", "step": step, **ev})
                    _tb_write(tb, {"step": step, "val_accuracy": ev["accuracy"]})
                    summary.val_accuracy = ev["accuracy"]
                    history["val"].append(ev["accuracy"])
                    history["train"].append(ev["train_accuracy"])
                    if (best is None or ev["accuracy"] > best) and all_finite(model):
                        best = ev["accuracy"]
                        checkpoint.save(out / checkpoint.BEST, state())
                        warned.discard("plateau")
                    bar.note(
                        f"step {step}: val accuracy {ev['accuracy']:.4f} (best {best or 0:.4f})"
                    )
                    # The progress guards: overfitting, then non-convergence.
                    if (
                        g.enabled
                        and overfitting(history["train"], history["val"], g.overfit_gap)
                        and "overfit" not in warned
                    ):
                        warned.add("overfit")
                        off = ", ".join(regularisers_off(r)) or "none"
                        event(
                            "overfit",
                            f"train accuracy {ev['train_accuracy']:.3f} vs validation "
                            f"{ev['accuracy']:.3f}, and the gap grows; best.pt keeps the best "
                            f"({best:.4f}); regularisers off: {off}"
                            + ("; stopping (stop_on_overfit)" if g.stop_on_overfit else ""),
                        )
                        if g.stop_on_overfit:
                            stop["requested"] = True
                            summary.stopped_by = "overfitting"
                    if (
                        g.enabled
                        and plateaued(history["val"], g.plateau_patience)
                        and "plateau" not in warned
                    ):
                        warned.add("plateau")
                        rng = checkpoint.rng_state()  # the checks must not shift the run's RNG
                        findings = diagnose_plateau(
                            model,
                            (x, y),
                            history["loss"],
                            n_classes,
                            set(to_freeze) if frozen else set(),
                            _label_error_share(data),
                        )
                        checkpoint.set_rng_state(rng)
                        event(
                            "plateau",
                            f"no better validation accuracy for {g.plateau_patience} evaluations: "
                            + "; ".join(findings),
                        )
            stopping = distributed.anyone(stop["requested"], ranks)
            if step % r.checkpoint_every == 0 or step == r.total_steps or stopping:
                if all_finite(model):  # the same weights on every rank: the same answer
                    rngs = distributed.gather(checkpoint.rng_state(), ranks)
                    if ranks.main:
                        checkpoint.save(latest, state(rngs if ranks.world > 1 else None))
                else:  # never write a non-finite model: go back to the last good state instead
                    event("numeric_nonfinite", "the model holds non-finite values: not saved")
                    step = numeric.rollback(model, opt, scaler, opt.param_groups[0]["lr"])
                    set_lr(sched, opt, step, numeric.lr_scale)
            # Guards on a timer or a flag: memory leaks (and worker recycling), GPU heat.
            recycle = bool(g.recycle_workers_every) and step % g.recycle_workers_every == 0
            for alarm in watch.alarms() if watch else []:
                worker = alarm.pid != os.getpid()
                event(
                    "memory_leak",
                    alarm.message()
                    + (
                        "; recycling the DataLoader workers"
                        if worker and g.recycle_workers_on_leak
                        else ""
                        if worker
                        else "; the training process itself: recycling the "
                        "workers does not help (tracemalloc: true names the lines)"
                    ),
                )
                recycle |= worker and g.recycle_workers_on_leak
            if recycle and r.workers > 0:
                stream.close()  # the workers exit; new ones start where the data stream was
                stream = batches()
                if watch:
                    watch.forget_children()
                event("recycle_workers", f"DataLoader workers restarted at epoch {epoch}, "
                      f"sample {position}")  # fmt: skip
            if thermal is not None:
                thermal.check(step, event)
    except GuardStop as e:
        summary.stopped_by = str(e)
        event("stop", str(e))
    finally:
        bar.close()
        if watch is not None:
            watch.stop()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        if tb is not None:
            tb.close()
        distributed.finish()

    summary.interrupted = step < r.total_steps
    summary.steps = step
    summary.epochs = epoch + position / max(len(sampler), 1)
    summary.best_val_accuracy = best
    summary.seconds = time.monotonic() - t0
    summary.images_per_s = images / max(summary.seconds, 1e-9)
    if ranks.main:
        from thresher.train.report import run_report

        summary.report = str(run_report(out))
        metrics_summary = {k: v for k, v in asdict(summary).items() if k != "events"}
        (out / "summary.json").write_text(_json(metrics_summary))
    return summary


@dataclass(frozen=True)
class StepContext:
    """What a micro-step needs besides its batch: the recipe and the run's fixed choices."""

    recipe: Recipe
    n_classes: int
    minority: torch.Tensor  # (K,) bool: the classes minority CutMix pastes from
    mixer: object | None  # timm's Mixup when cutmix is "timm"
    amp_dtype: torch.dtype | None


def training_data(r: Recipe, m, rows: np.ndarray) -> tuple[ImageDataset, np.ndarray]:
    """The training rows of a manifest as the recipe augments them, and their sampling weights."""
    ds = ImageDataset(m.paths[rows], m.targets[rows], train_transform(r), max(r.image_size, 64))
    weights = m.weights[rows] if r.oversample else np.ones(len(rows), np.float32)
    return ds, weights


def step_context(
    r: Recipe, targets: np.ndarray, n_classes: int, device: torch.device, amp: torch.dtype | None
) -> StepContext:
    """The micro-step's fixed choices: minority classes (of the training targets), the mixer."""
    counts = np.bincount(targets, minlength=n_classes)
    minority = torch.from_numpy(minority_classes(counts, r.minority_below)).to(device)
    mixer = _timm_mixup(r, n_classes) if r.cutmix == "timm" else None
    return StepContext(r, n_classes, minority, mixer, amp)


def forward_backward(
    net: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ctx: StepContext,
    step: int,
    draw: int,
    divisor: int,
    scaler,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One micro-batch: mix, forward, soft-target loss, backward of loss / divisor.

    `draw` numbers the micro-batch within the optimizer step over all ranks (micro x world +
    rank), so CutMix draws the same box for the same images at any world size. Returns the
    detached loss and logits.
    """
    r = ctx.recipe
    if ctx.mixer is not None:
        np.random.seed((r.seed * 1_000_003 + step * 1_000 + draw) % 2**32)
        x, soft = ctx.mixer(x, y)  # timm's Mixup smooths the labels itself
    else:
        soft = smooth_one_hot(y, ctx.n_classes, r.label_smoothing)
        if r.cutmix == "minority":
            rng = np.random.default_rng([r.seed, step, draw])
            x, soft = minority_cutmix(x, soft, y, ctx.minority, r.cutmix_prob, r.cutmix_alpha, rng)
    with torch.autocast(x.device.type, dtype=ctx.amp_dtype, enabled=ctx.amp_dtype is not None):
        logits = net(x)
    loss = torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
    scaler.scale(loss / divisor).backward()
    return loss.detach(), logits.detach()


def set_lr(sched, opt, step: int, scale: float) -> None:
    """The schedule's learning rate for `step`, times the numeric guard's rollback factor."""
    sched.step_update(step)
    if scale != 1.0:
        for group in opt.param_groups:
            group["lr"] *= scale


def _silent(message: str) -> None:
    pass


def _label_error_share(data: Path | str) -> float | None:
    """The clean stage's label-error share for this manifest's workspace, when it is known."""
    import json

    p = Path(data)
    summary = (p if p.is_dir() else p.parent) / "export.json"
    try:
        ws = json.loads(summary.read_text())["workspace"]
        from thresher.catalog import Catalog

        with Catalog(ws, create=False) as cat:
            s = cat.get_meta("clean_summary")
        return s["by_issue"].get("label_error", 0) / max(s["files"], 1)
    except (OSError, KeyError, ValueError, ThresherError):
        return None


def _thermal_guard(g, device, log):
    from thresher.guard.thermal import NvmlSensor, ThermalGuard

    if g.thermal_sensor == "off":
        return None
    if g.thermal_sensor == "nvml":
        if device.type != "cuda":
            return None
        try:
            sensor = NvmlSensor(torch.cuda.current_device())
        except Exception as e:  # no driver, no nvidia-ml-py: the run goes on without it
            log(f"thermal guard off: NVML unavailable ({e})")
            return None
    else:
        from thresher.data.transforms import load_callable

        sensor = load_callable(g.thermal_sensor)()
    return ThermalGuard(
        sensor, g.thermal_warn_c, g.thermal_pause_c, g.thermal_resume_c, g.thermal_poll_s
    )


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
