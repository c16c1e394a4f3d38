"""The machine's figures for the training log line: CPU, process memory, GPU use and memory.

What TensorBoard leaves out and W&B's system panel shows: is the GPU busy, is the CPU (the
data loader) the limit, is memory growing. Sampled at each log line, not on a thread, so a
figure belongs to the steps it sits beside.
What it costs: 0.1 ms a sample without workers on an idle 2-core machine (bench/step_costs.py;
each worker adds its own /proc read: about 0.2 ms with one, timed by hand)
(psutil reads /proc: the machine's and this process's CPU times, the RSS of the process and
of each DataLoader worker; NVML and torch.cuda on a GPU; bench/step_costs.py times it), once
per log line. Finding the workers means scanning every process on the
machine (ms), so their list is refreshed only every `children_every_s`, or when one exits.
When wrong: `cpu_percent` is the whole machine's, other jobs included; `gpu_memory_mb` is
what NVML reports for the whole card (other processes too), `gpu_allocated_mb` what this
process's tensors hold. A worker's RSS counts pages it shares with the main process (see
guard/memory.py): read its slope, not its sum, as the leak signal.
Absent figures (no GPU, no NVML, no psutil access) are left out of the line, never an error.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

MB = 1024 * 1024


@dataclass(frozen=True)
class SystemSample:
    """One sample; None where the figure cannot be had on this machine."""

    cpu_percent: float | None = None  # the machine, 0-100 over all cores, since the last sample
    process_cpu_percent: float | None = None  # the training process, 100 = one core
    rss_mb: float | None = None  # the training process's resident memory
    workers_rss_mb: float | None = None  # its DataLoader workers' together (0 without workers)
    gpu_util_percent: float | None = None  # NVML: share of time a kernel ran
    gpu_memory_mb: float | None = None  # NVML: memory in use on the card
    gpu_allocated_mb: float | None = None  # torch: what this process's tensors hold
    gpu_temp_c: float | None = None

    def record(self) -> dict[str, float]:
        """The figures that exist, rounded for metrics.jsonl."""
        return {k: round(v, 1) for k, v in asdict(self).items() if v is not None}


class SystemSampler:
    """Samples the figures of this machine; `sample()` at each log line."""

    def __init__(self, device=None, children_every_s: float = 30.0, log=None):
        self.device = device
        self.children_every_s = children_every_s
        self._children: list = []
        self._children_at = float("-inf")
        try:
            import psutil

            self.psutil = psutil
            self.proc = psutil.Process()
            # The first call of each starts the interval the next one measures.
            psutil.cpu_percent(None)
            self.proc.cpu_percent(None)
        except Exception:  # no /proc access: the line goes without CPU and memory figures
            self.psutil = None
        self.nvml = None
        if device is not None and getattr(device, "type", None) == "cuda":
            try:
                import torch

                from thresher.guard.thermal import NvmlSensor

                self.nvml = NvmlSensor.for_torch_device(torch.cuda.current_device())
            except Exception as e:  # no driver or no nvidia-ml-py: torch's own figure only
                if log:
                    log(f"GPU utilisation not logged: NVML unavailable ({e})")

    def sample(self) -> SystemSample:
        """The figures now (those that cannot be read are None)."""
        cpu = proc_cpu = rss = workers = None
        if self.psutil is not None:
            try:
                cpu = self.psutil.cpu_percent(None)
                proc_cpu = self.proc.cpu_percent(None)
                rss = self.proc.memory_info().rss / MB
                workers = self._workers_rss() / MB
            except Exception:
                pass
        util = used = allocated = temp = None
        if self.device is not None and getattr(self.device, "type", None) == "cuda":
            import torch

            allocated = torch.cuda.memory_allocated(self.device) / MB
            if self.nvml is not None:
                try:
                    u = self.nvml.usage()
                    util, used = u.util_percent, u.memory_used_mb
                    temp = self.nvml.read().temp_c
                except Exception:
                    pass
        return SystemSample(cpu, proc_cpu, rss, workers, util, used, allocated, temp)

    def _workers_rss(self) -> int:
        """The RSS of every child process (the DataLoader workers), in bytes."""
        now = time.monotonic()
        for fresh in (now - self._children_at > self.children_every_s, True):
            if fresh:  # the list is old, or one of it exited (an epoch's end, a recycle)
                self._children = self.proc.children(recursive=True)
                self._children_at = now
            try:
                return sum(c.memory_info().rss for c in self._children)
            except self.psutil.Error:
                continue
        return 0
