"""Starting a training run: the torchrun entry point, `--nproc` on one machine, the exit status.

`python -m thresher.train RECIPE --data DIR --out RUN` is what torchrun starts, once per rank
(`torchrun --nproc-per-node 8 -m thresher.train recipe.yaml --data export/ --out runs/r1`,
with --nnodes and --rdzv-endpoint on several machines); `thresher train --nproc N` runs exactly
that on one machine. This module is the train layer's own entry: it never imports the CLI.

Exit status: 0 done; 2 a user error (one line); 3 a guard stopped the run; 128 + the signal
number when a signal stopped it at a checkpoint (130 Ctrl-C / SIGINT, 143 SIGTERM).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from thresher.errors import ThresherError


def launch(nproc: int, args: list[str]) -> int:
    """Run `python -m thresher.train ARGS` as NPROC local processes under torchrun."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "thresher.train", *args]  # fmt: skip
    env = dict(os.environ)
    # torchrun's default is 1 thread per process, with a warning; say it once, on purpose.
    env.setdefault("OMP_NUM_THREADS", str(max((os.cpu_count() or 1) // nproc, 1)))
    return subprocess.call(cmd, env=env)


def exit_status(s) -> int:
    """The process's exit status for a RunSummary (see the module doc)."""
    if s.stopped_by and s.stopped_by != "overfitting" and s.signal is None:
        return 3
    if s.interrupted and s.signal is not None:
        return 128 + s.signal
    return 0


def closing_lines(s, recipe: Path, data: Path, run: Path) -> tuple[list[str], list[str]]:
    """What rank 0 says when the run ends: (to stdout, to stderr)."""
    acc = "" if s.val_accuracy is None else f"; val accuracy {s.val_accuracy:.4f}"
    best = "" if s.best_val_accuracy is None else f" (best {s.best_val_accuracy:.4f})"
    skipped = f"; {s.skipped_samples} samples skipped" if s.skipped_samples else ""
    out = [f"{s.steps} steps ({s.epochs:.2f} epochs){acc}{best}; {s.images_per_s:.0f} "
           f"images/s{skipped}; report: {s.report}"]  # fmt: skip
    err = []
    status = exit_status(s)
    if status == 3:
        err.append(f"a guard stopped the run at step {s.steps}: {s.stopped_by}")
    elif s.interrupted:
        if s.stopped_by:
            err.append(f"stopped at step {s.steps}: {s.stopped_by}")
        out.append(f"stopped at step {s.steps}: `thresher train {recipe} --data {data} "
                   f"--out {run} --resume` goes on")  # fmt: skip
    return out, err


def run(recipe: Path, data: Path, run_dir: Path, resume: bool, quiet: bool, log) -> int:
    """Train in this process (one rank); print the closing lines; return the exit status."""
    from thresher.train.distributed import from_env
    from thresher.train.loop import train

    s = train(recipe, data, run_dir, resume=resume, progress=not quiet, log=log)
    if not from_env().main:  # one closing line per run, not per process
        return exit_status(s)
    out, err = closing_lines(s, recipe, data, run_dir)
    for line in out:
        print(line, flush=True)
    for line in err:
        log(line)
    return exit_status(s)


def main(argv: list[str] | None = None) -> None:
    """`python -m thresher.train`: one rank of a run (what torchrun starts)."""
    ap = argparse.ArgumentParser(prog="python -m thresher.train")
    ap.add_argument("recipe", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--quiet", "-q", action="store_true")
    a = ap.parse_args(argv)
    from thresher.config import Recipe, load_yaml

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        load_yaml(a.recipe, Recipe)  # a bad recipe is one line, before torch is imported
        code = run(a.recipe, a.data, a.out or Path("runs") / a.recipe.stem, a.resume, a.quiet, log)
    except ThresherError as e:
        log(f"error: {e}")
        code = 2
    except KeyboardInterrupt:
        log("interrupted")
        code = 130
    sys.exit(code)
