"""Thermal guard: log a hot GPU, pause training above a limit until it cools, record the pauses.

What it catches: a GPU running hot (the field report: 92 C, fans at full) and its throttling.
What it does: at each step boundary, at most every `thermal_poll_s`, reads the temperature and
the throttle reasons; above `thermal_warn_c` (83 C) it logs (once per episode); above
`thermal_pause_c` (88 C) it pauses training until the GPU is below `thermal_resume_c` (80 C),
polling every `thermal_poll_s`, and records the pause and its length.
What it costs: one NVML query every `thermal_poll_s` seconds (microseconds).
When wrong: NVML reports the hottest sensor of the board; on some cards the memory runs hotter
than the core and the limits want raising. Without NVML (no NVIDIA GPU, no driver) it does
nothing and says so once.

The sensor is an interface: `read() -> Reading`. NvmlSensor reads a real GPU; a scripted sensor
(a list of readings) drives the tests, through the same guard.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from thresher.guard.hooks import Event, Hook, Verdict


@dataclass(frozen=True)
class Reading:
    """One sensor reading: temperature in C and the active throttle reasons (names)."""

    temp_c: float
    throttle: tuple[str, ...] = ()


@dataclass(frozen=True)
class GpuUsage:
    """How busy the GPU is: the share of time a kernel ran, and its memory in use (MiB)."""

    util_percent: float
    memory_used_mb: float
    memory_total_mb: float


def thermal_action(temp_c: float, paused: bool, warn_c: float, pause_c: float, resume_c: float):
    """'pause', 'resume', 'wait' (paused, still hot), 'warn' or 'ok' for one reading."""
    if paused:
        return "resume" if temp_c < resume_c else "wait"
    if temp_c >= pause_c:
        return "pause"
    if temp_c >= warn_c:
        return "warn"
    return "ok"


class NvmlSensor:
    """GPU `index` through NVML (nvidia-ml-py)."""

    # (constant name in nvidia-ml-py, what to call it); older releases say Throttle for Event.
    _THROTTLE = (
        ("ClocksEventReasonSwThermalSlowdown", "software thermal slowdown"),
        ("ClocksEventReasonHwThermalSlowdown", "hardware thermal slowdown"),
        ("ClocksEventReasonHwPowerBrakeSlowdown", "power brake"),
        ("ClocksEventReasonSwPowerCap", "power cap"),
    )

    def __init__(self, index: int = 0, uuid: str | None = None):
        import pynvml

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handle = (
            pynvml.nvmlDeviceGetHandleByUUID(uuid)
            if uuid
            else pynvml.nvmlDeviceGetHandleByIndex(index)
        )

    @classmethod
    def for_torch_device(cls, device: int) -> NvmlSensor:
        """The card torch calls `device`, found by its UUID.

        NVML numbers cards in bus order and ignores CUDA_VISIBLE_DEVICES, while CUDA renumbers
        them (the visible ones, the fastest first): with CUDA_VISIBLE_DEVICES=2,3 NVML's card 0
        is another job's GPU. The UUID names the same card to both.
        """
        import torch

        uuid = str(getattr(torch.cuda.get_device_properties(device), "uuid", "") or "")
        if uuid and not uuid.startswith(("GPU-", "MIG-")):
            uuid = f"GPU-{uuid}"
        return cls(device, uuid or None)

    def read(self) -> Reading:
        n = self.nvml
        temp = n.nvmlDeviceGetTemperature(self.handle, n.NVML_TEMPERATURE_GPU)
        get_mask = (
            getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or n.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        mask = get_mask(self.handle)
        reasons = []
        for const, label in self._THROTTLE:
            bit = getattr(n, f"nvml{const}", None)
            if bit is None:
                bit = getattr(n, f"nvml{const.replace('Event', 'Throttle')}", 0)
            if mask & bit:
                reasons.append(label)
        reasons = tuple(reasons)
        return Reading(float(temp), reasons)

    def usage(self) -> GpuUsage:
        """Utilisation over NVML's last sample period and memory in use, every process's."""
        n = self.nvml
        util = n.nvmlDeviceGetUtilizationRates(self.handle)
        mem = n.nvmlDeviceGetMemoryInfo(self.handle)
        mib = 1024 * 1024
        return GpuUsage(float(util.gpu), mem.used / mib, mem.total / mib)


class ScriptedSensor:
    """Readings from a list, the last one repeated: what the tests drive the guard with."""

    def __init__(self, temps: Iterable[float]):
        self.temps = list(temps)
        self.i = 0

    def read(self) -> Reading:
        t = self.temps[min(self.i, len(self.temps) - 1)]
        self.i += 1
        return Reading(float(t))


@dataclass
class ThermalGuard(Hook):
    """Reads `sensor.read()` at step boundaries; asks for a pause while the GPU is too hot."""

    sensor: object
    warn_c: float = 83.0
    pause_c: float = 88.0
    resume_c: float = 80.0
    poll_s: float = 10.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    pauses: list[dict] = field(default_factory=list)
    _last: float = float("-inf")
    _warned: bool = False

    name = "thermal"

    def on_timer(self, state) -> Verdict:
        """At most every `poll_s`: maybe a warning (once per episode), maybe a pause."""
        now = self.clock()
        if now - self._last < self.poll_s:
            return Verdict()
        self._last = now
        r = self.sensor.read()
        action = thermal_action(r.temp_c, False, self.warn_c, self.pause_c, self.resume_c)
        if action == "ok":
            self._warned = False
            return Verdict()
        if action == "warn":
            if self._warned:
                return Verdict()
            self._warned = True
            throttled = f", throttling: {', '.join(r.throttle)}" if r.throttle else ""
            message = f"GPU at {r.temp_c:.0f} C (warning level {self.warn_c:.0f} C){throttled}"
            return Verdict("go", [Event("thermal", message, local=True)])
        step = state.step
        return Verdict(
            "pause",
            [
                Event(
                    "thermal_pause",
                    f"GPU at {r.temp_c:.0f} C >= {self.pause_c:.0f} C: training "
                    f"paused until it is below {self.resume_c:.0f} C",
                    local=True,
                )
            ],  # fmt: skip
            wait=lambda: self.wait_until_cool(step, r.temp_c),
        )

    def wait_until_cool(self, step: int, peak: float) -> list[Event]:
        """Poll every `poll_s` until below `resume_c`; record the pause."""
        start = self.clock()
        while True:
            self.sleep(self.poll_s)
            r = self.sensor.read()
            peak = max(peak, r.temp_c)
            if thermal_action(r.temp_c, True, self.warn_c, self.pause_c, self.resume_c) == "resume":
                break
        seconds = self.clock() - start
        self.pauses.append({"step": step, "seconds": seconds, "peak_c": peak})
        self._last = self.clock()
        return [Event("thermal_resume", f"GPU cooled to {r.temp_c:.0f} C after {seconds:.0f} s "
                      f"(peak {peak:.0f} C); training resumes", local=True)]  # fmt: skip

    def check(self, step: int, say) -> None:
        """on_timer and, on a pause, the wait, with every event to `say(kind, message)`."""
        v = self.on_timer(_AtStep(step))
        events = v.events + (v.wait() if v.action == "pause" else [])
        for e in events:
            say(e.kind, e.message)


@dataclass(frozen=True)
class _AtStep:
    step: int
