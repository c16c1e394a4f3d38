"""What a guard looks like to the training loop: a hook with a few fixed points, and its verdict.

The loop holds a plain list of hooks and calls each point on all of them, in order:

    start(state)                      once, after setup and resume, before the first step
    before_step(state)                before the micro-batches of an optimizer step
    after_backward(state, loss, grad_norm)   the step's gradients are there, not yet applied
    after_step(state, record)         the step is applied; `record` is the metrics line or None
    after_eval(state, evaluation)     rank 0 evaluated (the accuracies, the confusion)
    before_checkpoint(state)          the loop is about to write checkpoint.pt
    on_timer(state)                   at every step boundary, for guards that poll
    close()                           the run ends, however it ends

`state` is the run's state (thresher.train.state.RunState: step, epoch, position, model,
optimizer, scaler, ...). A point returns a Verdict: events to record and at most one action.
The loop acts, the guard only decides. Actions, strongest first:

    stop       end the run now, with the guard's diagnosis; the last checkpoint stands
    rollback   restore `snapshot` (a good earlier state), the LR times `lr_factor`
    skip       drop this step's gradients (after_backward only)
    finish     end after this step, with a checkpoint (as a first Ctrl-C does)
    pause      call `wait()` before going on (it blocks until the condition clears)
    recycle    restart the DataLoader workers where the data stream is

No registry and no event bus: a guard is an object with some of these methods (the base class
gives the rest), so a guard's acting is tested by calling a method on a tiny state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

ORDER = ("go", "recycle", "pause", "finish", "skip", "rollback", "stop")


@dataclass(frozen=True)
class Event:
    """Something a guard (or the loop) did or found, for the terminal, metrics and the report.

    `local`: about this process's own machine (its memory, its GPU), said by every rank; the
    rest is the same on every rank and rank 0 says it once.
    """

    kind: str
    message: str
    local: bool = False


@dataclass
class Verdict:
    """A hook's answer at one point: events, and one action for the loop to take."""

    action: str = "go"
    events: list[Event] = field(default_factory=list)
    reason: str | None = None  # stop, finish: the diagnosis the run ends with
    snapshot: object | None = None  # rollback: the state to restore (step, model, optimizer...)
    lr_factor: float = 1.0  # rollback: the learning rate's new factor on the schedule
    wait: Callable[[], list[Event]] | None = None  # pause: blocks, returns what it saw

    def __post_init__(self):
        if self.action not in ORDER:
            raise ValueError(f"unknown guard action {self.action!r}")


def combine(verdicts: list[Verdict]) -> Verdict:
    """The verdicts of several hooks at one point: every event, the strongest action."""
    if not verdicts:
        return Verdict()
    strongest = max(verdicts, key=lambda v: ORDER.index(v.action))
    events = [e for v in verdicts for e in v.events]
    return Verdict(
        strongest.action,
        events,
        strongest.reason,
        strongest.snapshot,
        strongest.lr_factor,
        strongest.wait,
    )


class Hook:
    """A guard's fixed points; each answers 'go on' unless the guard overrides it."""

    name = "hook"

    def start(self, state) -> Verdict:
        return Verdict()

    def before_step(self, state) -> None:
        return None

    def after_backward(self, state, loss, grad_norm) -> Verdict:
        return Verdict()

    def after_step(self, state, record: dict | None) -> Verdict:
        return Verdict()

    def after_eval(self, state, evaluation: dict) -> Verdict:
        return Verdict()

    def before_checkpoint(self, state) -> Verdict:
        return Verdict()

    def on_timer(self, state) -> Verdict:
        return Verdict()

    def close(self) -> None:
        return None

    def state_dict(self) -> dict:
        """What a checkpoint keeps of this guard (so a resumed run judges as the first would)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None
