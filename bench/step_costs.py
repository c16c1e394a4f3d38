"""Per-step costs of the training loop's pieces, each timed alone (the figures the README and
bench/RESULTS.md's hand reading quote for the loop and guard overhead).

    .venv/bin/python bench/step_costs.py

On resnet10t at 32 px, batch 64, 2 CPU threads: a plain training step; per-sample seeding
(torch.manual_seed against the CPU generator alone); the gradient norm (clip_grad_norm_ with
no limit against get_total_norm); the numeric guard's calls; the memory sampler's listing of
the workers; the machine's figures each log line carries (train/system.py, every 10 steps).
Median of repeated calls.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def timed(fn, n: int = 30) -> float:
    """Median milliseconds of `fn` over n calls, after one warm-up call."""
    fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(out))


def main() -> None:
    import psutil
    import timm
    import torch
    import torch.nn.functional as F
    from scan import _write_section

    from thresher.config import GuardConfig
    from thresher.guard.numeric import NumericGuard
    from thresher.train.state import RunState

    torch.set_num_threads(2)
    t_start = time.perf_counter()
    model = timm.create_model("resnet10t", num_classes=10).train()
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    opt = torch.optim.AdamW(model.parameters())

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    rows = [("a plain training step (forward, backward, AdamW)", timed(step, 10))]
    rows.append(("torch.manual_seed, once per sample", timed(lambda: torch.manual_seed(1), 200)))

    def cpu_seed():
        torch.default_generator.manual_seed(1)
        random.seed(1)

    rows.append(("torch.default_generator.manual_seed + random.seed, once per sample",
                 timed(cpu_seed, 200)))  # fmt: skip
    params = list(model.parameters())
    rows.append(("clip_grad_norm_(params, inf): norm and a x1 pass over every gradient",
                 timed(lambda: torch.nn.utils.clip_grad_norm_(params, float("inf")))))  # fmt: skip
    grads = [p.grad for p in params if p.grad is not None]
    rows.append(("get_total_norm(grads): the norm alone",
                 timed(lambda: torch.nn.utils.get_total_norm(grads))))  # fmt: skip
    guard = NumericGuard(GuardConfig(), n_classes=10, samples_per_step=64)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    state = RunState(model, opt, scaler)
    loss, norm = torch.tensor(1.0), torch.tensor(1.0)
    for _ in range(100):  # a full baseline, as in a long run
        guard.check(loss, norm, scaler, model)
    rows.append(("numeric guard: before_step (batch-norm buffer copy)",
                 timed(lambda: guard.before_step(state))))  # fmt: skip
    rows.append(("numeric guard: check (sync, spike test on 100-step baselines)",
                 timed(lambda: guard.check(loss, norm, scaler, model))))  # fmt: skip
    snap = timed(lambda: guard.after_step(state, None), 10)  # step 0: a weight norm, a snapshot
    rows.append(("numeric guard: weight norm + snapshot (every 50 steps), per step", snap / 50))
    me = psutil.Process()
    rows.append(("memory sampler: list this process's children (every 5 s)",
                 timed(lambda: me.children(recursive=True), 20)))  # fmt: skip
    from thresher.train.system import SystemSampler

    sampler = SystemSampler(None)
    rows.append(("log line: the machine's figures (CPU, RSS, workers' RSS), every 10 steps",
                 timed(sampler.sample, 200)))  # fmt: skip
    step_ms = rows[0][1]
    # How often each runs per step: 64 samples; once; the memory sampler once per 5 s; the
    # log line every 10 steps (log_every's default).
    per_step = [64, 64, 1, 1, 1, 1, 1, step_ms / 5000, 1 / 10]
    table = [
        f"| {what} | {ms:.3f} | {100 * ms * k / step_ms:.2f}% |"
        for (what, ms), k in zip(rows[1:], per_step, strict=True)
    ]
    md = "\n".join(
        [
            "### Per-step costs of the loop's pieces (resnet10t, 32 px, batch 64, 2 threads)",
            "",
            f"A plain training step: {step_ms:.1f} ms (median of 10). Each piece alone, median of "
            "repeated calls. The share of a step counts how often each runs: 64 times a step for "
            "the per-sample seeding (in the DataLoader workers, which share the 2 cores), once "
            "a step for the rest, once per 5 s for the memory sampler, once per log line "
            "(every 10 steps) for the machine's figures.",
            "",
            "| piece | ms a call | share of a step |",
            "|---|---|---|",
            *table,
            "",
            f"`.venv/bin/python bench/step_costs.py` ({time.perf_counter() - t_start:.0f} s, CPU)",
        ]
    )
    print(md)
    _write_section(HERE / "RESULTS.md", "step_costs", md)


if __name__ == "__main__":
    main()
