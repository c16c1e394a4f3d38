"""Numeric guard: NaN / Inf / exploding loss and gradients, caught at the step they appear.

What it catches: a non-finite loss or global gradient norm, and a spike, judged against a
robust running baseline (median and MAD of the last `baseline_window` good steps): a value
more than `spike_z` robust deviations above the median and `spike_ratio` times it. Also an
explosion that stays finite and comes before the baseline does (AdamW or Lion at lr 100: loss
1e4-2e6 for the whole run): a loss `divergence_factor` times above both the first step's loss
and ln(classes), and weights whose global norm grew `weight_norm_factor` times (checked at
each snapshot, so a snapshot never holds them).
What it does, in order: skip the step (the optimizer never sees it; the batch is recorded);
after `max_consecutive_bad` bad steps in a row, roll back to the last good in-memory snapshot
(taken every `snapshot_every` good steps) with the learning rate multiplied by
`rollback_lr_factor`; after `max_rollbacks` rollbacks, stop with a diagnosis: the layers whose
gradients blew up, the learning rate, and the AMP scale history.
What it costs: one device sync per step for two numbers the loop computes anyway (loss, grad
norm); one fused copy of the float buffers (batch-norm statistics) per step, so that a skipped
step leaves no NaN behind in them; a copy of the model and optimizer state to host memory every
`snapshot_every` steps, and one norm over the weights then.
When it is wrong: a loss that legitimately jumps (a curriculum switch, a new data source) reads
as a spike until the baseline catches up: raise spike_z or spike_ratio. Under fp16 AMP an
overflow of the gradients alone is the GradScaler's business (it skips and lowers its scale);
the guard counts those and steps in only when the loss itself is not finite or the scale
collapses.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from thresher.config import GuardConfig
from thresher.guard.hooks import Event, Hook, Verdict


def robust_spike(value: float, history: np.ndarray, z: float, ratio: float) -> bool:
    """True when `value` is far above the robust baseline of `history` (finite values).

    Robust z: (value - median) / (1.4826 MAD); both that and value / median must exceed
    their limits, so a tight baseline does not flag a small wobble.
    """
    if len(history) == 0:
        return False
    med = float(np.median(history))
    mad = 1.4826 * float(np.median(np.abs(history - med)))
    scale = max(mad, 1e-3 * abs(med), 1e-12)
    return (value - med) / scale > z and value > ratio * max(med, 1e-12)


def classify(values, window: int = 100, z: float = 10.0, ratio: float = 10.0, warmup: int = 20):
    """The verdict for each value of a series: 'ok', 'nonfinite' or 'spike' (pure, for tests).

    The baseline is the last `window` values judged ok; no spike is called before `warmup` of
    them exist.
    """
    base: deque = deque(maxlen=window)
    out = []
    for v in values:
        if not np.isfinite(v):
            out.append("nonfinite")
        elif len(base) >= warmup and robust_spike(v, np.array(base), z, ratio):
            out.append("spike")
        else:
            out.append("ok")
            base.append(v)
    return out


@dataclass
class Snapshot:
    """A good state to roll back to, kept in host memory."""

    step: int
    model: dict
    optimizer: dict
    scaler: dict


class NumericGuard(Hook):
    """Judges every step after backward; keeps snapshots; asks for a skip, rollback or stop."""

    name = "numeric"

    def __init__(self, cfg: GuardConfig, n_classes: int = 2, samples_per_step: int = 1):
        self.cfg, self.n_classes, self.samples_per_step = cfg, n_classes, samples_per_step
        self.loss_history: deque = deque(maxlen=cfg.baseline_window)
        self.grad_history: deque = deque(maxlen=cfg.baseline_window)
        self.consecutive_bad = 0
        self.rollbacks = 0
        self.snapshot: Snapshot | None = None
        self.scale_history: deque = deque(maxlen=20)
        self.first_bad: dict | None = None
        self.amp_overflows = 0
        self.start_loss: float | None = None  # the first step's loss: the divergence yardstick
        self.start_weight_norm: float | None = None
        self.last: tuple[float, float] = (float("nan"), float("nan"))  # (loss, grad norm)
        self.trains: int | None = None  # tensors that took gradients in the last step
        self._buffers: list = []
        self._saved: list = []

    # -- the hook's points ---------------------------------------------------------------------
    def start(self, state) -> Verdict:
        """A good state to fall back on from the first step, and the weights' starting norm."""
        if self.start_weight_norm is None:
            self.start_weight_norm = weight_norm(state.model)
        self._take_snapshot(state)
        return Verdict()

    def before_step(self, state) -> None:
        """Keep the float buffers (batch-norm statistics) as they were before this step: a bad
        forward pass writes NaN into them even when its step is skipped. When the set of
        trained tensors changes (the end of a head-only phase, a freeze), the gradient norm
        measures something else: its baseline starts again."""
        trains = sum(q.requires_grad for q in state.model.parameters())
        if trains != self.trains and self.trains is not None:
            self.grad_history.clear()
        self.trains = trains
        if not self._buffers:
            self._buffers = [b for b in state.model.buffers() if b.is_floating_point()]
            self._saved = [b.detach().clone() for b in self._buffers]
        else:
            torch._foreach_copy_(self._saved, self._buffers)

    def after_backward(self, state, loss, grad_norm) -> Verdict:
        """Go, skip (the buffers are put back), roll back, or stop with the diagnosis."""
        verdict = self.check(loss, grad_norm, state.scaler, state.model)
        if verdict in ("ok", "amp_overflow"):
            return Verdict()
        self.undo_buffers()
        loss_v, grad_v = self.last
        start = max(state.position - self.samples_per_step, 0)
        skipped = Event(
            "numeric_skip",
            f"bad step skipped (loss {loss_v:.4g}, grad norm {grad_v:.4g}); its batch: epoch "
            f"{state.epoch}, samples {start}-{state.position}",
        )
        if verdict == "skip":
            return Verdict("skip", [skipped])
        v = self.rollback_verdict(state, f"{self.cfg.max_consecutive_bad} bad steps in a row")
        return Verdict(v.action, [skipped, *v.events], v.reason, v.snapshot, v.lr_factor)

    def after_step(self, state, record: dict | None) -> Verdict:
        """Every `snapshot_every` steps: weights that did not explode become the snapshot."""
        if state.step % self.cfg.snapshot_every:
            return Verdict()
        norm = weight_norm(state.model)
        limit = self.cfg.weight_norm_factor * (self.start_weight_norm or norm)
        if not np.isfinite(norm) or norm > limit:
            if self.first_bad is None:
                self.first_bad = {"loss": self.last[0], "grad_norm": self.last[1],
                                  "layers": worst_layers(state.model)}  # fmt: skip
            return self.rollback_verdict(
                state,
                f"the weights' norm is {norm:.3g}, over {self.cfg.weight_norm_factor:g}x its "
                f"start ({self.start_weight_norm:.3g})",
            )
        self._take_snapshot(state)
        return Verdict()

    def before_checkpoint(self, state) -> Verdict:
        """Never write a non-finite model: go back to the last good state instead."""
        if all_finite(state.model):
            return Verdict()
        return self.rollback_verdict(state, "the model holds non-finite values: not saved",
                                     kind="numeric_nonfinite")  # fmt: skip

    def rollback_verdict(self, state, why: str, kind: str = "numeric_rollback") -> Verdict:
        """Roll back to the snapshot with a lower LR, or stop once the rollbacks are spent."""
        self.rollbacks += 1
        self.consecutive_bad = 0
        lr = state.opt.param_groups[0]["lr"]
        if self.rollbacks > self.cfg.max_rollbacks or self.snapshot is None:
            diagnosis = self.diagnosis(lr, state.lr_scale)
            return Verdict("stop", [Event(kind, why)], reason=diagnosis)
        factor = state.lr_scale * self.cfg.rollback_lr_factor
        return Verdict(
            "rollback",
            [
                Event(
                    kind,
                    f"{why}: rolled back to step {self.snapshot.step}, learning rate now "
                    f"x{factor:g} of the schedule",
                )
            ],  # fmt: skip
            snapshot=self.snapshot,
            lr_factor=factor,
        )

    def state_dict(self) -> dict:
        """What a checkpoint keeps, so that a resumed run judges steps as the first would."""
        return {
            "rollbacks": self.rollbacks,
            "loss_history": list(self.loss_history),
            "grad_history": list(self.grad_history),
            "start_loss": self.start_loss,
            "start_weight_norm": self.start_weight_norm,
            "trains": self.trains,
        }

    def load_state_dict(self, state: dict) -> None:
        self.rollbacks = state["rollbacks"]
        self.loss_history.extend(state["loss_history"])
        self.grad_history.extend(state["grad_history"])
        self.start_loss = state.get("start_loss")
        self.trains = state.get("trains")
        self.start_weight_norm = state.get("start_weight_norm")

    # -- the decision ---------------------------------------------------------------------------
    def undo_buffers(self) -> None:
        """Put the float buffers back as they were when the step began."""
        if self._buffers:
            torch._foreach_copy_(self._buffers, self._saved)

    def check(self, loss: torch.Tensor, grad_norm: torch.Tensor, scaler, model) -> str:
        """'ok', 'amp_overflow' (the scaler handles it), 'skip', or 'rollback'.

        The one device sync of the step: loss and grad norm come back together.
        """
        loss_v, grad_v = torch.stack([loss.float(), grad_norm.float()]).tolist()
        self.last = (loss_v, grad_v)
        if scaler.is_enabled():
            self.scale_history.append(scaler.get_scale())
        if scaler.is_enabled() and np.isfinite(loss_v) and not np.isfinite(grad_v):
            self.amp_overflows += 1
            if scaler.get_scale() >= self.cfg.min_amp_scale:
                return "amp_overflow"
        bad = not (np.isfinite(loss_v) and np.isfinite(grad_v))
        if not bad and self.start_loss is not None:
            bad = diverged(loss_v, self.start_loss, self.n_classes, self.cfg.divergence_factor)
        if not bad and len(self.loss_history) >= self.cfg.baseline_min_steps:
            bad = robust_spike(
                loss_v, np.array(self.loss_history), self.cfg.spike_z, self.cfg.spike_ratio
            )
        if not bad and len(self.grad_history) >= self.cfg.baseline_min_steps:
            bad = robust_spike(
                grad_v, np.array(self.grad_history), self.cfg.spike_z, self.cfg.spike_ratio
            )
        if not bad:
            if self.start_loss is None:
                self.start_loss = loss_v
            self.consecutive_bad = 0
            self.loss_history.append(loss_v)
            self.grad_history.append(grad_v)
            return "ok"
        self.consecutive_bad += 1
        if self.first_bad is None:
            self.first_bad = {"loss": loss_v, "grad_norm": grad_v, "layers": worst_layers(model)}
        if self.consecutive_bad >= self.cfg.max_consecutive_bad:
            return "rollback"
        return "skip"

    def diagnosis(self, lr: float, lr_scale: float) -> str:
        fb = self.first_bad or {}
        layers = ", ".join(f"{n} ({v:.3g})" for n, v in fb.get("layers", [])[:3]) or "unknown"
        scales = ", ".join(f"{s:g}" for s in list(self.scale_history)[-5:]) or "no AMP"
        return (
            f"the loss kept blowing up after {self.rollbacks - 1} rollbacks with a lower LR. "
            f"First bad step: loss {fb.get('loss')}, grad norm {fb.get('grad_norm')}; "
            f"largest or non-finite gradients in: {layers}. LR at the end {lr:.3g} "
            f"(x{lr_scale:g} of the schedule); AMP scale history: {scales}. "
            "Likely: a learning rate far too high for this model and batch, or bad input "
            "(see the skipped batches above)."
        )

    def _take_snapshot(self, state) -> None:
        self.snapshot = Snapshot(
            state.step,
            _to_cpu(state.model.state_dict()),
            _to_cpu(state.opt.state_dict()),
            copy.deepcopy(state.scaler.state_dict()),
        )


def diverged(loss: float, start_loss: float, n_classes: int, factor: float) -> bool:
    """True when a finite loss is `factor` times above both its start and ln(classes).

    A run whose loss sits at 1e4 while it began near ln(K) is not learning, it is exploding
    without reaching Inf (AdamW or Lion at a huge LR): the spike test cannot see it when the
    explosion came before its baseline did.
    """
    return loss > factor * max(start_loss, math.log(max(n_classes, 2)))


def weight_norm(model: torch.nn.Module) -> float:
    """The global L2 norm of the model's parameters (one fused pass)."""
    params = [p.detach() for p in model.parameters()]
    if not params:
        return 0.0
    return float(torch.nn.utils.get_total_norm(params))


def worst_layers(model: torch.nn.Module, top: int = 5) -> list[tuple[str, float]]:
    """The parameters with non-finite or the largest gradient norms (computed only when a step
    went bad, so it costs nothing on good steps). Non-finite ones come first, deepest first:
    the gradient flows from the head backwards, so the deepest bad layer blew up first."""
    norms = []
    for i, (name, p) in enumerate(model.named_parameters()):
        if p.grad is not None:
            norms.append((name, float(p.grad.float().norm()), i))
    bad = sorted((x for x in norms if not np.isfinite(x[1])), key=lambda x: -x[2])
    good = sorted((x for x in norms if np.isfinite(x[1])), key=lambda x: -x[1])
    return [(n, v) for n, v, _ in (bad + good)[:top]]


def all_finite(model: torch.nn.Module) -> bool:
    """True when every parameter and buffer is finite (checked before any checkpoint)."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def _to_cpu(state):
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_to_cpu(v) for v in state)
    return copy.deepcopy(state)
