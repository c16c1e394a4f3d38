"""Ctrl-C and SIGTERM: the first ends the run at the next step boundary with a checkpoint.

A terminal's Ctrl-C, `timeout` and Slurm send their signal to the whole process group, the
DataLoader workers included. The workers ignore SIGINT and SIGTERM (`ignore_stop_signals`, their
worker_init_fn): the main process decides, says "stopping after this step" once, checkpoints,
then shuts its workers down. A second signal stops at once (the last checkpoint stands).
The exit status says which signal stopped the run: 128 + its number (130 SIGINT, 143 SIGTERM).
"""

from __future__ import annotations

import os
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader worker's init: leave SIGINT and SIGTERM to the main process."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


class StopRequest:
    """While active (a `with` block), a first stop signal sets `signum`; a second raises."""

    def __init__(self, log):
        self.log = log
        self.signum: int | None = None
        self._old: dict = {}
        self._pid = os.getpid()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if os.getpid() != self._pid:  # a forked child that has not reset its handlers yet
            return
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        self.log("stopping after this step (a checkpoint follows); Ctrl-C again to stop now")

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # only it receives signals
            self._old = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
