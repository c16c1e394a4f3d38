"""Numeric guard: NaN / Inf / exploding loss and gradients, caught at the step they appear.

What it catches: a non-finite loss or global gradient norm, and a spike, judged against a
robust running baseline (median and MAD of the last `baseline_window` good steps): a value
more than `spike_z` robust deviations above the median and `spike_ratio` times it.
What it does, in order: skip the step (the optimizer never sees it; the batch is recorded);
after `max_consecutive_bad` bad steps in a row, roll back to the last good in-memory snapshot
(taken every `snapshot_every` good steps) with the learning rate multiplied by
`rollback_lr_factor`; after `max_rollbacks` rollbacks, stop with a diagnosis: the layers whose
gradients blew up, the learning rate, and the AMP scale history.
What it costs: one device sync per step for two numbers the loop computes anyway (loss, grad
norm); one fused copy of the float buffers (batch-norm statistics) per step, so that a skipped
step leaves no NaN behind in them; a copy of the model and optimizer state to host memory every
`snapshot_every` steps.
When it is wrong: a loss that legitimately jumps (a curriculum switch, a new data source) reads
as a spike until the baseline catches up: raise spike_z or spike_ratio. Under fp16 AMP an
overflow of the gradients alone is the GradScaler's business (it skips and lowers its scale);
the guard counts those and steps in only when the loss itself is not finite or the scale
collapses.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from thresher.config import GuardConfig


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


class GuardStop(Exception):
    """A guard ended the run; the message is its diagnosis."""


@dataclass
class _Snapshot:
    step: int
    model: dict
    optimizer: dict
    scaler: dict


@dataclass
class NumericGuard:
    """The numeric guard's state; the loop calls `check` once per step, after backward."""

    cfg: GuardConfig
    loss_history: deque = field(default_factory=deque)
    grad_history: deque = field(default_factory=deque)
    consecutive_bad: int = 0
    rollbacks: int = 0
    lr_scale: float = 1.0
    snapshot: _Snapshot | None = None
    scale_history: deque = field(default_factory=lambda: deque(maxlen=20))
    first_bad: dict | None = None
    amp_overflows: int = 0
    last: tuple[float, float] = (float("nan"), float("nan"))  # (loss, grad norm) of the step
    _buffers: list = field(default_factory=list)
    _saved: list = field(default_factory=list)

    def __post_init__(self):
        self.loss_history = deque(maxlen=self.cfg.baseline_window)
        self.grad_history = deque(maxlen=self.cfg.baseline_window)

    def begin_step(self, model: torch.nn.Module) -> None:
        """Keep the float buffers (batch-norm statistics) as they were before this step: a bad
        forward pass writes NaN into them even when its step is skipped."""
        if not self._buffers:
            self._buffers = [b for b in model.buffers() if b.is_floating_point()]
            self._saved = [b.detach().clone() for b in self._buffers]
        else:
            torch._foreach_copy_(self._saved, self._buffers)

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
        if not bad and len(self.loss_history) >= self.cfg.baseline_min_steps:
            bad = robust_spike(
                loss_v, np.array(self.loss_history), self.cfg.spike_z, self.cfg.spike_ratio
            ) or robust_spike(
                grad_v, np.array(self.grad_history), self.cfg.spike_z, self.cfg.spike_ratio
            )
        if not bad:
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

    def state(self) -> dict:
        """What a checkpoint keeps, so that a resumed run judges steps as the first would."""
        return {
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "loss_history": list(self.loss_history),
            "grad_history": list(self.grad_history),
        }

    def load_state(self, state: dict) -> None:
        self.lr_scale, self.rollbacks = state["lr_scale"], state["rollbacks"]
        self.loss_history.extend(state["loss_history"])
        self.grad_history.extend(state["grad_history"])

    def maybe_snapshot(self, step: int, model, opt, scaler) -> None:
        """Keep an in-memory copy of a good state every `snapshot_every` steps."""
        if step % self.cfg.snapshot_every == 0 or self.snapshot is None:
            self.snapshot = _Snapshot(
                step,
                _to_cpu(model.state_dict()),
                _to_cpu(opt.state_dict()),
                copy.deepcopy(scaler.state_dict()),
            )

    def rollback(self, model, opt, scaler, lr: float) -> int:
        """Restore the last good snapshot, lower the LR; return its step (or raise GuardStop)."""
        self.rollbacks += 1
        if self.rollbacks > self.cfg.max_rollbacks or self.snapshot is None:
            raise GuardStop(self.diagnosis(lr))
        model.load_state_dict(self.snapshot.model)
        self._buffers = []  # taken afresh at the next step
        opt.load_state_dict(self.snapshot.optimizer)
        scaler.load_state_dict(self.snapshot.scaler)
        opt.zero_grad(set_to_none=True)
        self.lr_scale *= self.cfg.rollback_lr_factor
        self.consecutive_bad = 0
        return self.snapshot.step

    def diagnosis(self, lr: float) -> str:
        fb = self.first_bad or {}
        layers = ", ".join(f"{n} ({v:.3g})" for n, v in fb.get("layers", [])[:3]) or "unknown"
        scales = ", ".join(f"{s:g}" for s in list(self.scale_history)[-5:]) or "no AMP"
        return (
            f"the loss kept blowing up after {self.rollbacks - 1} rollbacks with a lower LR. "
            f"First bad step: loss {fb.get('loss')}, grad norm {fb.get('grad_norm')}; "
            f"largest or non-finite gradients in: {layers}. LR at the end {lr:.3g} "
            f"(x{self.lr_scale:g} of the schedule); AMP scale history: {scales}. "
            "Likely: a learning rate far too high for this model and batch, or bad input "
            "(see the skipped batches above)."
        )


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
