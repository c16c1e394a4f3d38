"""`thresher train`: the reported recipe as one readable loop, resumable to the same weights.

`train` reads top to bottom: setup (train/setup.py, shared with ddp-check), resume (the run
state, train/state.py), then for each optimizer step: accumulate micro-batches, let the guards
judge (guard/hooks.py: a plain list of hooks called at fixed points), apply or drop the step,
log, evaluate, checkpoint. The guards decide; the loop acts on their verdicts (`_act`).

Everything random is a function of (seed, epoch, position) or (seed, step), or lives in the
global torch RNG that the checkpoint saves, so a run killed at any point and resumed from its
last checkpoint ends with the same weights as one never interrupted (tests/test_train.py kills
a real subprocess to check).
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from thresher.config import Recipe, load_yaml
from thresher.data.epochs import EpochBatches
from thresher.errors import ThresherError
from thresher.files import atomic_write
from thresher.guard.hooks import Event, Hook, Verdict, combine
from thresher.guard.numeric import all_finite
from thresher.progress import ProgressBar
from thresher.train import checkpoint, distributed, metrics
from thresher.train.evaluate import evaluate
from thresher.train.model import freeze, train_head_only
from thresher.train.progress import step_info, tb_write, tensorboard
from thresher.train.setup import Parts, set_lr, setup
from thresher.train.signals import StopRequest, ignore_stop_signals
from thresher.train.state import RunState
from thresher.train.system import SystemSampler

METRICS = metrics.FILE
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
    images_per_s: float = 0.0  # over the whole run, every session together
    seconds: float = 0.0  # in the loop, every session together
    interrupted: bool = False
    signal: int | None = None  # the signal that stopped it (SIGINT, SIGTERM), if one did
    stopped_by: str | None = None  # a guard's diagnosis when a guard ended the run
    skipped_samples: int = 0  # samples the user transform raised on (skipped, counted)
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
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not resume and (out / checkpoint.LATEST).exists():
        raise ThresherError(
            f"{out} already holds a run: add --resume to go on with it, or choose another --out"
        )
    rec = _Recorder(out, ranks, log, RunSummary(out=str(out)))
    log = rec.log  # what every rank knows is said once, by rank 0
    p = setup(r, data, ranks, device, log)
    state = RunState(p.model, p.opt, p.scaler)
    hooks = _guards(p, log)
    # -- resume -----------------------------------------------------------------------------------
    if resume:
        _resume(state, p, hooks, rec)
    elif ranks.main:
        rec.metrics_path.unlink(missing_ok=True)
    set_lr(p.sched, p.opt, state.step, state.lr_scale)
    if ranks.main:
        (out / RECIPE).write_text(_yaml(r))
    state.net = distributed.wrap(p.model, ranks, device)  # DDP broadcasts rank 0's weights
    rec.tb = tensorboard(r, out, log) if ranks.main else None
    rec.bar = ProgressBar("train", r.total_steps, progress and ranks.main, start=state.step)
    # -- the loop ---------------------------------------------------------------------------------
    t0, seconds_before = time.monotonic(), state.seconds
    last_log = (t0, state.images)
    stream = _batches(p, state)
    accuracy = _TrainAccuracy(device)
    system = SystemSampler(device, log=log) if ranks.main else None  # rank 0 writes the line
    stopping = False  # the stop all ranks agreed on (a local request joins at the step's end)
    head_phase = False  # only the head trains (the recipe's first head_only_fraction of steps)
    p.model.train()  # evaluate() puts it back in train mode after each evaluation
    with StopRequest(log) as stop:
        try:
            finish = _act(combine([h.start(state) for h in hooks]), state, p, rec)
            while state.step < r.total_steps and not stopping:
                if (state.step < r.head_only_steps) != head_phase:  # a function of the step
                    head_phase = not head_phase
                    kept = p.to_freeze if state.frozen else ()
                    n = train_head_only(p.model, head_phase, kept)
                    state.net = distributed.wrap(p.model, ranks, device)  # hooks what trains
                    rec.event(state, Event("head_only", f"the head alone trains until step "
                                           f"{r.head_only_steps} ({n} tensors), the backbone "
                                           "fixed in evaluation mode" if head_phase else
                                           f"the whole network trains ({n} tensors)"))  # fmt: skip
                if (not state.frozen and r.freeze_last_fraction > 0 and p.to_freeze
                        and state.step >= p.freeze_at):  # fmt: skip
                    n = freeze(p.model, p.to_freeze)
                    state.frozen = True
                    state.net = distributed.wrap(p.model, ranks, device)  # hooks what trains
                    rec.event(state, Event("freeze", f"froze the {r.freeze_groups} lowest "
                                           f"layer groups ({n} tensors)"))  # fmt: skip
                for h in hooks:
                    h.before_step(state)
                loss, grad_norm = _accumulate(state, p, stream, accuracy)
                v = combine([h.after_backward(state, loss, grad_norm) for h in hooks])
                if v.action in ("skip", "rollback", "stop"):
                    p.scaler.update()  # closes this step's unscale_ for the GradScaler
                    p.opt.zero_grad(set_to_none=True)
                    _act(v, state, p, rec)
                    continue
                finish |= _act(v, state, p, rec)  # its events, and a finish or a pause
                p.scaler.step(p.opt)
                p.scaler.update()
                p.opt.zero_grad(set_to_none=True)
                state.step += 1
                set_lr(p.sched, p.opt, state.step, state.lr_scale)
                state.images += r.batch_size * r.grad_accum * ranks.world
                state.seconds = seconds_before + time.monotonic() - t0
                line = None
                if state.step % r.log_every == 0 or state.step == r.total_steps:
                    now = time.monotonic()
                    loss_v, grad_v = torch.stack([loss.float(), grad_norm.float()]).tolist()
                    line = {
                        "kind": "train",
                        "step": state.step,
                        "epoch": state.epoch,
                        "loss": loss_v,
                        "lr": p.opt.param_groups[0]["lr"],
                        "grad_norm": grad_v,
                        "images_per_s": (state.images - last_log[1]) / max(now - last_log[0], 1e-9),
                        # the batches since the last line, as trained (augmented, mixed)
                        "train_accuracy": accuracy.take_window(ranks),
                        "time": now - t0,  # this session's
                        "images": state.images,  # these two: the whole run's
                        "seconds": state.seconds,
                        # CPU, RSS, GPU use and memory (what the machine has); metrics.append
                        # adds the wall-clock time
                        **(system.sample().record() if system else {}),
                    }
                    last_log = (now, state.images)
                    rec.line(line)
                finish |= _act(combine([h.after_step(state, line) for h in hooks]), state, p, rec)
                if state.step % r.eval_every == 0 or state.step == r.total_steps:
                    train_accuracy = accuracy.take(ranks)
                    ev = evaluate(p.model, p.val_ds, r, device, p.amp, len(p.classes),
                                  p.channels_last) if ranks.main else None  # fmt: skip
                    if ev is not None:  # rank 0; a stop it decides joins at the step's end
                        ev["train_accuracy"] = train_accuracy
                        rec.evaluation(state, ev)
                        if (state.best is None or ev["accuracy"] > state.best) and all_finite(
                            p.model
                        ):
                            state.best = ev["accuracy"]
                            checkpoint.save(out / checkpoint.BEST, _checkpoint(state, p, hooks))
                        rec.bar.note(f"step {state.step}: val accuracy {ev['accuracy']:.4f} "
                                     f"(best {state.best or 0:.4f})")  # fmt: skip
                        v = combine([h.after_eval(state, ev) for h in hooks])
                        finish |= _act(v, state, p, rec)
                stopping = distributed.anyone(stop.requested or finish, ranks)
                due = state.step % r.checkpoint_every == 0 or state.step == r.total_steps
                if due or stopping:
                    v = combine([h.before_checkpoint(state) for h in hooks])
                    if v.action == "go":
                        _save(state, p, hooks, rec)
                    else:
                        _act(v, state, p, rec)
                timer = [h.on_timer(state) for h in hooks]
                v = combine(timer)
                # Any hook's recycle is done, even when another asks for more (a pause).
                if any(t.action == "recycle" for t in timer) and r.workers > 0:
                    stream.close()  # the workers exit; new ones start where the stream was
                    stream = _batches(p, state)
                    v.events.append(Event("recycle_workers", f"DataLoader workers restarted at "
                                          f"epoch {state.epoch}, sample {state.position}",
                                          local=True))  # fmt: skip
                finish |= _act(v, state, p, rec)
        except _Stop as e:
            rec.summary.stopped_by = e.reason
            rec.event(state, Event("stop", e.reason))
        finally:
            stream.close()  # the DataLoader workers exit now, even when an error ends the run
            rec.bar.close()
            for h in hooks:
                h.close()
            if rec.tb is not None:
                rec.tb.close()
            distributed.finish()
    # -- the summary and the report -------------------------------------------------------------
    s = rec.summary
    if stop.signum is not None:
        s.signal = stop.signum
        name = signal.Signals(stop.signum).name
        rec.event(state, Event("interrupt", f"{name} at step {state.step}: stopped with a "
                               "checkpoint; --resume goes on"))  # fmt: skip
    s.interrupted, s.steps, s.best_val_accuracy = state.step < r.total_steps, state.step, state.best
    s.epochs = state.epoch + state.position / max(len(p.sampler), 1)
    s.seconds = state.seconds
    s.images_per_s = state.images / max(state.seconds, 1e-9)
    s.skipped_samples = p.skipped.count
    if ranks.main:
        _finish_files(out, s, log)
    return s


class _Stop(Exception):
    """A guard ended the run now (its diagnosis); the last checkpoint stands."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _act(v: Verdict, state: RunState, p: Parts, rec: _Recorder) -> bool:
    """Record a verdict's events and take its action; True when it asks the run to finish."""
    for e in v.events:
        rec.event(state, e)
    if v.action == "rollback":
        state.roll_back(v.snapshot, v.lr_factor)
        set_lr(p.sched, p.opt, state.step, state.lr_scale)
    elif v.action == "stop":
        raise _Stop(v.reason or "a guard stopped the run")
    elif v.action == "pause":
        for e in v.wait():
            rec.event(state, e)
    elif v.action == "finish":
        rec.summary.stopped_by = rec.summary.stopped_by or v.reason
        return True
    return False


def _accumulate(state: RunState, p: Parts, stream, accuracy: _TrainAccuracy):
    """The step's micro-batches, forward and backward; (mean loss over ranks, gradient norm)."""
    r, ranks = p.recipe, p.ranks
    loss_sum = torch.zeros((), device=p.device)
    for micro in range(r.grad_accum):
        x, y = p.inputs(next(stream))  # uint8 to the device, augmented there
        with distributed.no_sync(state.net, last=micro == r.grad_accum - 1):
            draw = micro * ranks.world + ranks.rank  # its place in the global step
            loss, logits = p.pieces.forward_backward(
                state.net, x, y, p.ctx, state.step, draw, r.grad_accum, state.scaler
            )
        loss_sum += loss
        accuracy.add(logits, y)
    state.batch = (x, y)
    state.scaler.unscale_(state.opt)  # clip what the optimizer will see, not scaled gradients
    params = [q for q in state.model.parameters() if q.grad is not None]  # frozen: no grad
    if r.grad_clip:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, r.grad_clip)
    else:  # the norm alone, for the guard and the log: not a x1 pass over every grad
        grad_norm = torch.nn.utils.get_total_norm([q.grad for q in params])
    # The loss is every rank's mean, the grad norm already all-reduced: one verdict.
    return distributed.mean(loss_sum / r.grad_accum, ranks), grad_norm


def _batches(p: Parts, state: RunState):
    """The training stream, epoch after epoch, from the state's (epoch, position) on.

    One DataLoader, iterated once, over batches that run on across the epochs
    (data/epochs.py): its workers prefetch the next epoch's first batches while this epoch's
    last ones train, and a resumed stream starts mid-epoch. The loader draws ahead of the
    loop, so each batch's (epoch, position) comes from the batch sampler's FIFO as the batch
    is consumed: a checkpoint saves the place of the last batch trained. Closing the stream
    (the recycle-workers action, the run's end) shuts the workers down.
    """
    r = p.recipe
    order = EpochBatches(p.sampler, r.batch_size, state.epoch, state.position)
    loader = torch.utils.data.DataLoader(
        p.train_ds,
        batch_sampler=order,
        collate_fn=p.collate,  # on a CPU, the batch transforms run in the workers
        num_workers=r.workers,
        persistent_workers=r.workers > 0,
        pin_memory=p.device.type == "cuda",  # uint8 batches, copied asynchronously
        worker_init_fn=ignore_stop_signals,  # Ctrl-C and SIGTERM are the main process's
        # The loader draws its base seed from this generator, not from the global RNG that
        # dropout uses: creating a loader mid-epoch on resume must not shift dropout's stream.
        generator=torch.Generator().manual_seed(r.seed),
    )
    batches = None
    try:
        batches = iter(loader)
        for batch in batches:
            place = order.places.popleft()  # the loader delivers batches in order
            state.epoch, state.position = place.epoch, place.position
            yield batch
        state.epoch, state.position = order.empty_epoch, 0  # the stream ends only there
        raise ThresherError(
            f"an epoch of this manifest holds no full batch of {r.batch_size}: its "
            "weights draw too few samples (check the weight column, or oversample: false)"
        )
    finally:
        # The workers ignore SIGTERM (the main process checkpoints on it), so they are shut
        # down here: an error's traceback would keep them alive, and the exit would wait on
        # them forever.
        getattr(batches, "_shutdown_workers", lambda: None)()
        # The sampler was set ahead, to epochs the loop has not reached; back to the loop's
        # place, for what reads it afterwards (the summary's epoch count).
        p.sampler.set_epoch(state.epoch, state.position)


def _resume(state: RunState, p: Parts, hooks: list[Hook], rec: _Recorder) -> None:
    """The run state, RNG streams and guards' memory from OUT/checkpoint.pt."""
    r, ranks = p.recipe, p.ranks
    ck = checkpoint.load(rec.out / checkpoint.LATEST)
    if ck["classes"] != p.classes or ck["recipe"]["model"] != r.model:
        raise ThresherError(
            f"the checkpoint in {rec.out} is a {ck['recipe']['model']} over "
            f"{len(ck['classes'])} classes; this recipe and manifest are not the same run"
        )
    changed = [k for k, v in r.model_dump(mode="json").items() if ck["recipe"].get(k) != v]
    if changed:
        rec.log(f"resuming with a changed recipe: {', '.join(changed)}")
    state.restore(ck)
    world = ck.get("world", 1)
    if world != ranks.world:  # the same share of the epoch, dealt anew
        state.position = state.position * world // ranks.world
        rec.log(f"resuming a {world}-process run with {ranks.world}: the data order goes on, "
                "dropout and augmentation streams start afresh")  # fmt: skip
    if state.frozen:
        freeze(p.model, p.to_freeze)
    rngs = ck.get("rng_ranks") or [ck["rng"]]
    checkpoint.set_rng_state(rngs[ranks.rank] if len(rngs) == ranks.world else ck["rng"])
    if len(rngs) != ranks.world:
        torch.manual_seed(distributed.rank_seed(r.seed + state.step, ranks.rank))
    saved = ck.get("guards") or {}
    if "loss_history" in saved:  # before the hooks, the numeric guard's state alone
        saved = {"numeric": saved}
    for h in hooks:
        if h.name in saved:
            h.load_state_dict(saved[h.name])
    if p.ranks.main:  # rank 0 alone writes metrics.jsonl
        metrics.truncate_after(rec.metrics_path, state.step)
    rec.summary.resumed_from = state.step
    rec.event(state, Event("resume", f"resumed {rec.out} at step {state.step} (epoch "
                           f"{state.epoch}, sample {state.position})"))  # fmt: skip


def _checkpoint(state: RunState, p: Parts, hooks: list[Hook], rngs: list | None = None) -> dict:
    return state.checkpoint(
        {
            "world": p.ranks.world,
            "classes": p.classes,
            "recipe": p.recipe.model_dump(mode="json"),
            "guards": {h.name: h.state_dict() for h in hooks},
        },
        rngs,
    )


def _save(state: RunState, p: Parts, hooks: list[Hook], rec: _Recorder) -> None:
    """checkpoint.pt, by rank 0 with every rank's RNG; never a non-finite model."""
    if not all_finite(p.model):  # the same weights on every rank: the same answer
        rec.event(state, Event("numeric_nonfinite", "the model holds non-finite values: not saved"))
        return
    rngs = distributed.gather(checkpoint.rng_state(), p.ranks)
    if p.ranks.main:
        ck = _checkpoint(state, p, hooks, rngs if p.ranks.world > 1 else None)
        checkpoint.save(rec.out / checkpoint.LATEST, ck)


def _guards(p: Parts, log) -> list[Hook]:
    """The guards the recipe turns on, in the order the loop calls them."""
    from thresher.guard.memory import GpuMemoryGuard, LeakGuard
    from thresher.guard.numeric import NumericGuard
    from thresher.guard.progress import ProgressGuard
    from thresher.guard.samples import SkippedSamplesGuard

    r, g = p.recipe, p.recipe.guards
    if not g.enabled:
        return []
    per_step = r.batch_size * r.grad_accum
    hooks: list[Hook] = [
        NumericGuard(g, len(p.classes), per_step),
        ProgressGuard(r, len(p.classes), p.to_freeze, p.label_error_share),
        SkippedSamplesGuard(p.skipped, g.max_skipped_share, per_step),
    ]
    if g.memory:
        hooks.append(LeakGuard(g, r.workers))
    if p.device.type == "cuda":  # GPU memory growth: the host leak's slope logic
        hooks.append(GpuMemoryGuard(g, torch.cuda.memory_allocated))
    thermal = _thermal_guard(g, p.device, log)
    if thermal is not None:
        hooks.append(thermal)
    return hooks


def _thermal_guard(g, device, log):
    from thresher.guard.thermal import NvmlSensor, ThermalGuard

    if g.thermal_sensor == "off":
        return None
    if g.thermal_sensor == "nvml":
        if device.type != "cuda":
            return None
        try:
            sensor = NvmlSensor.for_torch_device(torch.cuda.current_device())
        except Exception as e:  # no driver, no nvidia-ml-py: the run goes on without it
            log(f"thermal guard off: NVML unavailable ({e})")
            return None
    else:
        from thresher.loading import load_object

        sensor = load_object(g.thermal_sensor, "thermal_sensor")()
    return ThermalGuard(
        sensor, g.thermal_warn_c, g.thermal_pause_c, g.thermal_resume_c, g.thermal_poll_s
    )


class _TrainAccuracy:
    """Correct predictions of the training batches since the last evaluation, and since the
    last log line (counted on the device: no sync per batch)."""

    def __init__(self, device):
        self.correct, self.seen = torch.zeros((), device=device, dtype=torch.long), 0
        self.window_correct, self.window_seen = torch.zeros_like(self.correct), 0

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        hits = (logits.argmax(dim=1) == y).sum()
        self.correct += hits
        self.window_correct += hits
        self.seen += len(y)
        self.window_seen += len(y)

    def take_window(self, ranks) -> float:
        """The share right since the last log line, over every rank (read at the log line,
        after the loss's own sync: no extra wait on the device)."""
        correct = distributed.total(int(self.window_correct.item()), ranks)
        seen = distributed.total(self.window_seen, ranks)
        self.window_correct.zero_()
        self.window_seen = 0
        return correct / max(seen, 1)

    def take(self, ranks) -> float:
        correct = distributed.total(int(self.correct.item()), ranks)
        seen = distributed.total(self.seen, ranks)
        self.correct.zero_()
        self.seen = 0
        return correct / max(seen, 1)


class _Recorder:
    """Where the run's lines go: metrics.jsonl (rank 0), the terminal, TensorBoard, the bar."""

    def __init__(self, out: Path, ranks, log, summary: RunSummary):
        self.out, self.ranks, self.summary = out, ranks, summary
        self.metrics_path = out / METRICS
        self.tb = None
        self.bar = ProgressBar("train", 0, enabled=False)
        self._say = log
        self._rank_say = lambda m: print(f"[rank {ranks.rank}] {m}", file=sys.stderr, flush=True)

    def log(self, message: str) -> None:
        """What every rank knows, said once, by rank 0."""
        if self.ranks.main:
            self._say(message)

    def event(self, state: RunState, e: Event) -> None:
        rec = {"kind": "event", "step": state.step, "event": e.kind, "message": e.message}
        self.summary.events.append(rec)
        if self.ranks.main:
            metrics.append(self.metrics_path, rec)
            self._say(f"[{e.kind}] step {state.step}: {e.message}")
        elif e.local:  # about this rank's own machine: every rank says its own
            self._rank_say(f"[{e.kind}] step {state.step}: {e.message}")

    def line(self, rec: dict) -> None:
        if self.ranks.main:
            metrics.append(self.metrics_path, rec)
        tb_write(self.tb, rec)
        self.bar.update(rec["step"], step_info(rec))

    def evaluation(self, state: RunState, ev: dict) -> None:
        metrics.append(self.metrics_path, {"kind": "eval", "step": state.step, **ev})
        tb_write(self.tb, {"step": state.step, "val_accuracy": ev["accuracy"]})
        self.summary.val_accuracy = ev["accuracy"]


def _finish_files(out: Path, s: RunSummary, log) -> None:
    """summary.json first (it must exist whatever the report does), then report.html."""
    from thresher.train.report import run_report

    def write_summary() -> None:
        with atomic_write(out / "summary.json") as f:
            f.write(_json({k: v for k, v in asdict(s).items() if k != "events"}).encode())

    write_summary()
    try:
        s.report = str(run_report(out))
    except Exception as e:  # a report that cannot be drawn must not hide a finished run
        log(f"the run report could not be written ({type(e).__name__}: {e})")
        return
    write_summary()


def _yaml(r: Recipe) -> str:
    import yaml

    return yaml.safe_dump(r.model_dump(mode="json"), sort_keys=False)


def _json(d: dict) -> str:
    import json

    return json.dumps(d, indent=1, default=str)
