"""Memory guards: a host-memory leak (main process or DataLoader workers), and GPU memory growth.

What it catches: memory that grows steadily, the leak that ended the field report's run after
72 hours (+3 MB/s, 64 GB). A background thread samples the RSS of the training process
and of every child (the DataLoader workers) every `memory_interval_s`; after a warm-up it fits a
robust slope (Theil-Sen: the median of pairwise slopes, so a burst or a freed cache does not
move it) over the last `leak_window_s`, and alarms when one process grows faster than
`leak_mb_per_s` for `leak_sustain_s`. The alarm names the process, the rate, and the time until
the machine's available memory is gone. With `tracemalloc: true` it also names the lines of the
main process that allocated the most since the warm-up. The same slope logic watches
torch.cuda.memory_allocated on a GPU.
What it does: says so (terminal, metrics, report) and, with `recycle_workers_on_leak`, restarts
the DataLoader workers at the next step boundary (a worker leak is then bounded by the
recycle period); `recycle_workers_every` does it every N steps regardless, as the field
report's practitioner did by hand every 1,000 steps.
What it costs: a thread waking every few seconds for a few psutil reads; nothing in the loop
but a flag check. tracemalloc slows allocation-heavy Python code several fold: off by default.
When wrong: a cache that fills once (a dataset cached in memory during the first epoch) grows
for a while and then stops: keep `leak_sustain_s` longer than such a warm-up, or raise
`memory_warmup_s`. A worker's RSS counts pages shared with the parent; USS is the honest
figure, but reading it costs tens of milliseconds a process; the guard uses RSS, whose slope
is the same for a worker (it starts with its parent's pages mapped), and `thresher doctor`,
which runs once, uses USS.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from thresher.guard.hooks import Event, Hook, Verdict

MB = 1024 * 1024


def theil_sen_slope(t: np.ndarray, y: np.ndarray) -> float:
    """The median of the slopes between every pair of points (robust to outliers)."""
    t, y = np.asarray(t, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(t) < 2:
        return 0.0
    i, j = np.triu_indices(len(t), k=1)
    dt = t[j] - t[i]
    ok = dt > 0
    if not ok.any():
        return 0.0
    return float(np.median((y[j] - y[i])[ok] / dt[ok]))


def sustained_growth(
    t: np.ndarray,
    y: np.ndarray,
    rate: float,
    sustain_s: float,
    window_s: float,
) -> tuple[bool, float]:
    """(alarm, slope): the slope of the last `window_s` exceeded `rate` at every sample of the
    last `sustain_s` seconds (each judged over its own trailing window)."""
    t, y = np.asarray(t, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(t) < 3 or t[-1] - t[0] < sustain_s:
        return False, theil_sen_slope(t, y) if len(t) >= 2 else 0.0
    slopes = []
    for k in np.nonzero(t >= t[-1] - sustain_s)[0]:
        w = (t >= t[k] - window_s) & (t <= t[k])
        if w.sum() >= 3:
            slopes.append(theil_sen_slope(t[w], y[w]))
    now = slopes[-1] if slopes else 0.0
    return bool(slopes and min(slopes) > rate and t[-1] - t[0] >= sustain_s), now


@dataclass
class Alarm:
    """A leak alarm: which process, how fast, how long until memory runs out."""

    process: str
    pid: int
    mb_per_s: float
    hours_left: float
    detail: str = ""

    def message(self) -> str:
        left = f"{self.hours_left:.1f} h" if np.isfinite(self.hours_left) else "never"
        return (
            f"memory leak: {self.process} (pid {self.pid}) grows {self.mb_per_s:.2f} MB/s; "
            f"the machine's available memory is gone in {left} at this rate"
            + (f"; {self.detail}" if self.detail else "")
        )


class HostMemoryWatch:
    """The background sampler. `alarms()` hands the loop what it found since the last call."""

    def __init__(
        self,
        interval_s: float = 5.0,
        warmup_s: float = 60.0,
        rate_mb_per_s: float = 1.0,
        sustain_s: float = 180.0,
        window_s: float = 120.0,
        use_tracemalloc: bool = False,
        pid: int | None = None,
    ):
        self.interval_s, self.warmup_s = interval_s, warmup_s
        self.rate, self.sustain_s, self.window_s = rate_mb_per_s * MB, sustain_s, window_s
        self.use_tracemalloc = use_tracemalloc
        self.pid = pid or os.getpid()
        self.series: dict[int, tuple[str, deque, deque]] = {}
        self.alarmed: set[int] = set()
        self._found: list[Alarm] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thresher-memory", daemon=True)
        self._t0 = time.monotonic()
        self._snapshot = None

    def start(self) -> HostMemoryWatch:
        if self.use_tracemalloc:
            import tracemalloc

            tracemalloc.start(10)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.use_tracemalloc:
            import tracemalloc

            tracemalloc.stop()

    def alarms(self) -> list[Alarm]:
        with self._lock:
            found, self._found = self._found, []
        return found

    def forget_children(self) -> None:
        """The workers were recycled: their series end (new workers start new ones)."""
        with self._lock:
            for pid in [p for p in self.series if p != self.pid]:
                self.series.pop(pid)
                self.alarmed.discard(pid)

    def _run(self) -> None:
        import psutil

        me = psutil.Process(self.pid)
        while not self._stop.wait(self.interval_s):
            now = time.monotonic() - self._t0
            try:
                procs = [me, *me.children(recursive=True)]
            except psutil.Error:
                return
            for i, p in enumerate(procs):
                try:
                    # RSS, from /proc/PID/statm: microseconds. USS needs smaps, tens of ms for a
                    # large process, which a 2-core machine feels (bench: guard overhead). A
                    # forked worker's RSS starts at its parent's pages, so its slope is still
                    # its own growth.
                    value = p.memory_info().rss
                except psutil.Error:
                    continue
                name = "the training process" if i == 0 else "a DataLoader worker"
                with self._lock:
                    _, ts, ys = self.series.setdefault(
                        p.pid, (name, deque(maxlen=2000), deque(maxlen=2000))
                    )
                    ts.append(now)
                    ys.append(value)
            if now >= self.warmup_s and self._snapshot is None and self.use_tracemalloc:
                import tracemalloc

                self._snapshot = tracemalloc.take_snapshot()
            self._judge(now)

    def _judge(self, now: float) -> None:
        import psutil

        with self._lock:
            items = list(self.series.items())
        for pid, (name, ts, ys) in items:
            if pid in self.alarmed:
                continue
            t, y = np.array(ts), np.array(ys)
            keep = t >= self.warmup_s
            alarm, slope = sustained_growth(
                t[keep], y[keep], self.rate, self.sustain_s, self.window_s
            )
            if alarm:
                available = psutil.virtual_memory().available
                detail = self._allocating_lines() if pid == self.pid else ""
                with self._lock:
                    self.alarmed.add(pid)
                    self._found.append(
                        Alarm(name, pid, slope / MB, available / slope / 3600, detail)
                    )

    def _allocating_lines(self) -> str:
        if not self.use_tracemalloc or self._snapshot is None:
            return ""
        import tracemalloc

        stats = tracemalloc.take_snapshot().compare_to(self._snapshot, "lineno")[:3]
        return "growing most at " + "; ".join(
            f"{s.traceback[0].filename}:{s.traceback[0].lineno} (+{s.size_diff / MB:.1f} MB)"
            for s in stats
        )


class LeakGuard(Hook):
    """The host-memory watch as a hook: its alarms become events, a worker's leak a recycle."""

    name = "memory"

    def __init__(self, cfg, workers: int, watch: HostMemoryWatch | None = None):
        self.cfg, self.workers = cfg, workers
        self.watch = watch or HostMemoryWatch(
            cfg.memory_interval_s,
            cfg.memory_warmup_s,
            cfg.leak_mb_per_s,
            cfg.leak_sustain_s,
            cfg.leak_window_s,
            cfg.tracemalloc,
        )
        self._started = False

    def start(self, state) -> Verdict:
        if not self._started:
            self.watch.start()
            self._started = True
        return Verdict()

    def on_timer(self, state) -> Verdict:
        """Alarms as events; recycle the workers on a worker's leak, or every N steps."""
        every = self.cfg.recycle_workers_every
        recycle = bool(every) and state.step > 0 and state.step % every == 0
        events = []
        for alarm in self.watch.alarms():
            worker = alarm.pid != self.watch.pid
            if not worker:
                note = ("; the training process itself: recycling the workers does not help "
                        "(tracemalloc: true names the lines)")  # fmt: skip
            elif self.cfg.recycle_workers_on_leak:
                note = "; recycling the DataLoader workers"
            else:
                note = ""
            events.append(Event("memory_leak", alarm.message() + note, local=True))
            recycle |= worker and self.cfg.recycle_workers_on_leak
        if recycle and self.workers > 0:
            self.watch.forget_children()  # new workers start new series
            return Verdict("recycle", events)
        return Verdict("go", events)

    def close(self) -> None:
        if self._started:
            self.watch.stop()


class GpuMemoryGuard(Hook):
    """Allocated GPU memory sampled at each metrics line; sustained growth is named once."""

    name = "gpu_memory"

    def __init__(self, cfg, allocated, clock=time.monotonic):
        self.cfg, self.allocated, self.clock = cfg, allocated, clock
        self.t: list[float] = []
        self.y: list[float] = []
        self.warned = False

    def after_step(self, state, record: dict | None) -> Verdict:
        if record is None or self.warned:
            return Verdict()
        self.t.append(self.clock())
        self.y.append(float(self.allocated()))
        grows, slope = sustained_growth(np.array(self.t), np.array(self.y),
                                        self.cfg.leak_mb_per_s * MB, self.cfg.leak_sustain_s,
                                        self.cfg.leak_window_s)  # fmt: skip
        if not grows:
            return Verdict()
        self.warned = True
        return Verdict("go", [Event("gpu_memory_growth", f"allocated GPU memory grows "
                                    f"{slope / MB:.2f} MB/s: tensors kept across steps?",
                                    local=True)])  # fmt: skip
