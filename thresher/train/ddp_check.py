"""`thresher ddp-check`: does the N-process first step equal the 1-process one?

A data-parallel run is only the single-process run made faster if its N ranks, together, do
exactly what one process would do with the same global batch. The check runs the recipe's
first optimizer step twice on the same global batch and compares, stage by stage:

- at world size 1, in this process: the global batch dealt into N shares as the sampler deals
  it, each share's micro-batches run with that rank's RNG stream, gradients summed over all
  of them (so per-rank batch-norm statistics and per-rank dropout are the same as in DDP);
- at world size N: N real processes (gloo on CPUs, NCCL on GPUs) running the same pieces the
  training loop runs, each writing what it saw and did.

| compared | when it differs, the likely cause |
|---|---|
| initial weights (before DDP's broadcast) | a different seed per rank |
| the samples each rank drew | an unseeded shuffle, or a sampler not sharded by rank |
| the pixels of the same samples | augmentation RNG not derived from (seed, epoch, position) |
| the loss on the same data and weights | dropout / drop-path RNG, a nondeterministic model |
| gradients (missing on a rank) | a rank that skipped backward: DDP's all-reduce waits for it |
| gradients | not averaged over ranks (no DDP, or the wrong divisor) |
| the weights after the step | the optimizer or learning rate differs per rank |

Notes, not failures: parameters that receive no gradient (DDP then needs
find_unused_parameters) and batch-norm layers that compute statistics per rank (expected,
unless sync_batchnorm on GPUs).

The run is built by train/setup.py's `setup`, the one `thresher train` uses; its pieces
(seeding, sampler, micro-step) come from a `Setup` (thresher's own by default);
`--setup module:name` checks another, which is how the tests break one piece at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from thresher.config import Recipe
from thresher.devices import default_device
from thresher.errors import ThresherError
from thresher.files import atomic_write
from thresher.loading import load_object
from thresher.train.distributed import Ranks
from thresher.train.setup import THRESHER, Pieces, set_lr, setup  # noqa: F401 - THRESHER: --setup's default

# The pieces a check swaps (`--setup module:name`): train/setup.py's, under their old name here.
Setup = Pieces


@dataclass
class Finding:
    """One comparison: what, its verdict (ok, differs, failed, note), the detail and a cause."""

    check: str
    verdict: str
    detail: str = ""
    cause: str = ""


@dataclass
class CheckResult:
    """The verdict of a check: passed when nothing differs or failed."""

    nproc: int
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(f.verdict in ("ok", "note") for f in self.findings)


def ddp_check(
    recipe: Recipe,
    data: Path | str | None = None,
    nproc: int = 2,
    setup: str = "thresher.train.ddp_check:THRESHER",
    timeout_s: float = 300,
    log=print,
) -> CheckResult:
    """Run the first step at world size 1 and NPROC and compare them (see the module doc)."""
    if nproc < 2:
        raise ThresherError("--nproc must be 2 or more: the check compares 1 process with N")
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="thresher-ddp-check-"))
    if data is None:
        data = _generated_data(work / "data", recipe)
        log(f"no --data: {data} holds generated images")
    spec = {
        "recipe": recipe.model_dump(mode="json"),
        "data": str(data),
        "setup": setup,
        "nproc": nproc,
        "timeout_s": timeout_s,
    }
    (work / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ)
    env.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        WORLD_SIZE=str(nproc),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        # The ranks import what this process can (a --setup module next to the caller).
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
    )
    log(f"starting {nproc} processes ({'NCCL' if torch.cuda.is_available() else 'gloo'})")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "thresher.train.ddp_check", str(work)],
            env={**env, "RANK": str(k), "LOCAL_RANK": str(k)},
            stdout=subprocess.DEVNULL,
            stderr=open(work / f"rank{k}.log", "wb"),  # noqa: SIM115 - the child owns it
            start_new_session=True,
        )
        for k in range(nproc)
    ]
    try:
        log("running the step at world size 1 here, meanwhile")
        ref = first_step(recipe, data, _load_setup(setup), 0, 1, virtual=nproc)
        deadline = time.monotonic() + timeout_s
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(deadline - time.monotonic(), 0.1))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()
    ranks = []
    for k, p in enumerate(procs):
        f = work / f"rank{k}.pt"
        rec = torch.load(f, weights_only=False) if f.exists() else {"rank": k, "stage": "start"}
        if p.returncode not in (0, None) and "error" not in rec:
            tail = (work / f"rank{k}.log").read_text(errors="replace").strip().splitlines()
            rec["error"] = (
                f"exit status {p.returncode}: " + (tail[-1] if tail else "")
                if p.returncode > 0
                else f"killed after {timeout_s:.0f} s (hung)"
            )
        ranks.append(rec)
    result = CheckResult(nproc, compare(ref, ranks), time.monotonic() - t0)
    if result.passed:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    else:
        result.findings.append(Finding("logs", "note", f"each rank's log: {work}/rank*.log"))
    return result


def first_step(
    r: Recipe, data: Path | str, pieces: Pieces, rank: int, world: int, virtual: int = 1
) -> dict:
    """Run the recipe's first optimizer step and record every stage of it.

    At world size 1 with `virtual` N > 1, the global batch of N ranks is dealt into N shares
    (rank v takes positions v, v+N, ... of the sampler's order) and each share runs with rank
    v's RNG stream: the single-process equivalent of N ranks, step for step.
    """
    from thresher.train import distributed

    rec: dict = {"rank": rank, "stage": "setup"}
    ranks, device = (
        distributed.init(timeout_s=60) if world > 1 else (Ranks(0, 1, 0), default_device())
    )
    try:
        p = setup(r, data, ranks, device, lambda msg: None, pieces)
        model, ds, opt, scaler = p.model, p.train_ds, p.opt, p.scaler
        model.train()
        # Built under seed_model; its weights before any rank's stream or DDP's broadcast.
        rec["init"] = _params(model)
        rec["batchnorm"] = sum(
            isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in model.modules()
        )
        states = []
        for v in range(virtual) if world == 1 else [rank]:
            pieces.seed_rank(r.seed, v)
            states.append(torch.get_rng_state())
        # At the peak learning rate, not the warm-up's first (often 0): the update must show.
        set_lr(p.sched, opt, r.warmup_steps, 1.0)
        ctx = p.ctx
        b, a = r.batch_size, r.grad_accum
        rec["stage"] = "data"
        if world == 1:
            order = list(_take(p.sampler, b * a * virtual))
            shares = [order[v::virtual] for v in range(virtual)]
            batches = [
                [
                    p.inputs(_collate(ds, shares[v][k * b : (k + 1) * b], p.collate))
                    for k in range(a)
                ]
                for v in range(virtual)
            ]
            rec["samples"] = [[i for i, _ in s] for s in shares]
        else:
            net = distributed.wrap(model, ranks, device)
            drawn: list = []
            loader = torch.utils.data.DataLoader(
                ds,
                batch_size=b,
                sampler=_Recording(p.sampler, drawn),
                collate_fn=p.collate,
                drop_last=True,
                num_workers=0,
            )
            it = iter(loader)
            batches = [[p.inputs(next(it)) for _ in range(a)]]  # augmented on the device
            rec["samples"] = [[i for i, _ in drawn[: b * a]]]
        rec["inputs"] = [[x.cpu() for x, _ in bs] for bs in batches]  # after the device's part
        rec["stage"] = "forward and backward"
        losses = [[None] * a for _ in batches]
        for k in range(a):
            for j, bs in enumerate(batches):
                x, y = bs[k]
                torch.set_rng_state(states[j])
                v = j if world == 1 else rank
                draw = k * (virtual if world == 1 else world) + v
                if world == 1:
                    loss, _ = pieces.forward_backward(
                        model, x, y, ctx, 0, draw, a * virtual, scaler
                    )
                else:
                    with distributed.no_sync(net, last=k == a - 1):
                        loss, _ = pieces.forward_backward(net, x, y, ctx, 0, draw, a, scaler)
                states[j] = torch.get_rng_state()
                losses[j][k] = float(loss)
        rec["losses"] = losses
        rec["grads"] = {
            n: (q.grad.detach().cpu().clone() if q.grad is not None else None)
            for n, q in model.named_parameters()
            if q.requires_grad
        }
        rec["stage"] = "optimizer step"
        scaler.step(opt)
        scaler.update()
        rec["after"] = _params(model)
        rec["stage"] = "done"
    except Exception as e:
        rec["error"] = f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]
    finally:
        if world > 1:
            distributed.finish()
    return rec


class _Recording(torch.utils.data.Sampler):
    """A sampler that notes what it hands out (an unseeded one differs on every pass)."""

    def __init__(self, sampler, into: list):
        self.sampler, self.into = sampler, into

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for item in self.sampler:
            self.into.append(_as_item(item))
            yield item


def compare(ref: dict, ranks: list[dict]) -> list[Finding]:
    """The findings, stage by stage, of N ranks' records against the 1-process record."""
    f: list[Finding] = []
    n = len(ranks)
    for rec in ranks:
        if "error" in rec:
            f.append(
                Finding(
                    f"rank {rec['rank']}", "failed", f"stopped in {rec['stage']}: {rec['error']}"
                )
            )
    if "error" in ref:
        f.append(Finding("world size 1", "failed", f"stopped in {ref['stage']}: {ref['error']}"))
        return f

    def each(key: str):
        return [rec for rec in ranks if key in rec]

    # initial weights
    bad = [rec["rank"] for rec in each("init") if not _same_tensors(rec["init"], ref["init"], 0)]
    f.append(
        Finding(
            "initial weights",
            "differs",
            f"rank(s) {bad} built other weights than rank 0",
            "different seeds per rank: seed every rank with the same seed before building "
            "the model (DDP's broadcast hides it for the weights, not for what else that "
            "seed drives)",
        )
        if bad
        else Finding("initial weights", "ok", "the same on every rank")
    )
    # samples
    bad, overlap = [], []
    for rec in each("samples"):
        k = rec["rank"]
        if rec["samples"][0] != ref["samples"][k]:
            bad.append(k)
            if any(rec["samples"][0] == o["samples"][0] for o in each("samples") if o is not rec):
                overlap.append(k)
    if bad:
        cause = (
            "the sampler is not sharded by rank: every rank draws the same samples"
            if overlap
            else "the shuffle is not a function of (seed, epoch) alone: an unseeded shuffle, "
            "or a seed that differs per rank"
        )
        f.append(
            Finding(
                "samples drawn",
                "differs",
                f"rank(s) {bad} drew other samples than their share of the "
                "single-process global batch",
                cause,
            )
        )
    else:
        drawn = sum(len(rec["samples"][0]) for rec in each("samples"))
        f.append(Finding("samples drawn", "ok", f"each rank drew its share ({drawn} in all)"))
    # pixels of the same samples
    bad = [
        rec["rank"]
        for rec in each("inputs")
        if rec["samples"][0] == ref["samples"][rec["rank"]]
        and not all(
            torch.equal(x, y)
            for x, y in zip(rec["inputs"][0], ref["inputs"][rec["rank"]], strict=True)
        )
    ]
    if bad:
        f.append(
            Finding(
                "augmented inputs",
                "differs",
                f"rank(s) {bad}: the same samples, other pixels",
                "augmentation RNG not derived from (seed, epoch, position): per-worker "
                "or per-rank random state",
            )
        )
    elif f[-1].verdict == "ok":
        f.append(Finding("augmented inputs", "ok", "pixel for pixel the same"))
    inputs_ok = f[-1].verdict == "ok"
    # loss
    bad = []
    for rec in each("losses"):
        a, b = np.array(rec["losses"][0], float), np.array(ref["losses"][rec["rank"]], float)
        if not np.allclose(a, b, rtol=1e-4, atol=1e-6):
            bad.append(f"rank {rec['rank']}: {a.round(5).tolist()} vs {b.round(5).tolist()}")
    if bad:
        f.append(
            Finding(
                "loss",
                "differs",
                "; ".join(bad),
                "dropout / drop-path RNG differs from the single process's per-rank "
                "streams, or the model is not deterministic"
                if inputs_ok
                else "follows from the differences above",
            )
        )
    else:
        f.append(Finding("loss", "ok", f"the same on every rank and micro-batch ({n} ranks)"))
    # gradients
    skipped = [
        rec["rank"] for rec in each("grads") if all(g is None for g in rec["grads"].values())
    ]
    stuck = [rec["rank"] for rec in ranks if "grads" not in rec]
    if skipped:
        f.append(
            Finding(
                "gradients",
                "differs",
                f"rank(s) {skipped} hold no gradient"
                + (f"; rank(s) {stuck} failed or hung in backward" if stuck else ""),
                "a rank skipped backward: DDP's gradient all-reduce waits for every "
                "rank, so a real run hangs there (or dies of the timeout)",
            )
        )
    else:
        bad = [
            rec["rank"]
            for rec in each("grads")
            if not _same_tensors(rec["grads"], ref["grads"], 1e-3)
        ]
        f.append(
            Finding(
                "gradients",
                "differs",
                f"rank(s) {bad} differ from the 1-process gradients",
                "gradients not averaged over ranks (no DDP wrap, or a loss divided by the "
                "wrong count)"
                if f[-1].verdict == "ok"
                else "follows from the differences above",
            )
            if bad
            else Finding("gradients", "ok", "every parameter's gradient agrees (rtol 1e-3)")
        )
        if stuck and not bad:
            f[-1] = Finding("gradients", "failed", f"rank(s) {stuck} did not finish backward")
    # weights after the step
    bad = [rec["rank"] for rec in each("after") if not _same_update(rec, ref)]
    if bad:
        cause = (
            "the optimizer step differs per rank (learning rate, optimizer state)"
            if f[-1].verdict == "ok"
            else "follows from the differences above"
        )
        f.append(Finding("weights after the step", "differs", f"rank(s) {bad}", cause))
    elif each("after"):
        f.append(Finding("weights after the step", "ok", "every parameter agrees"))
    # notes
    unused = [k for k, g in ref["grads"].items() if g is None]
    if unused:
        f.append(
            Finding(
                "unused parameters",
                "note",
                f"{len(unused)} get no gradient (first: {unused[0]})",
                "DDP needs find_unused_parameters=True, or remove them",
            )
        )
    if ref.get("batchnorm"):
        f.append(
            Finding(
                "batch norm",
                "note",
                f"{ref['batchnorm']} layers compute statistics per rank, over "
                "batch_size images each (the check emulates this)",
                "sync_batchnorm: true (CUDA) makes them global",
            )
        )
    return f


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters()}


def _same_tensors(a: dict, b: dict, rtol: float) -> bool:
    for k, x in b.items():
        y = a.get(k)
        if (x is None) != (y is None):
            return False
        if x is None:
            continue
        if rtol == 0:
            if not torch.equal(x, y):
                return False
        elif (
            torch.linalg.vector_norm((x - y).double())
            > rtol * torch.linalg.vector_norm(x.double()) + 1e-12
        ):
            return False
    return True


def _same_update(rec: dict, ref: dict) -> bool:
    """The step's change agrees: at most 0.1% of the values move otherwise.

    Sign-based optimizers (Lion) turn a gradient's last-bit difference near zero into a full
    step the other way, so the share of values that differ is the measure, not a norm.
    """
    bad = total = 0
    for k, before in ref["init"].items():
        d_ref, d = ref["after"][k] - before, rec["after"][k] - rec["init"][k]
        tol = 1e-6 + 1e-3 * d_ref.abs().max().item()
        bad += int(((d - d_ref).abs() > tol).sum())
        total += d.numel()
    return bad <= 1e-3 * total


def _as_item(item) -> tuple[int, int | None]:
    """A sampler's item as (index, sample seed): thresher's samplers give both, others an index."""
    return item if isinstance(item, tuple) else (int(item), None)


def _take(sampler, n: int) -> list:
    out = []
    for item in sampler:
        out.append(_as_item(item))
        if len(out) == n:
            break
    return out


def _collate(ds, items: list, collate):
    """The batch the training DataLoader would make of these (index, seed) items."""
    return collate([ds[it if it[1] is not None else it[0]] for it in items])


def _load_setup(spec: str) -> Setup:
    return load_object(
        spec, "--setup", lambda o: isinstance(o, Setup), "a thresher.train.ddp_check.Setup"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _generated_data(root: Path, r: Recipe, classes: int = 4, per_class: int = 16) -> Path:
    """A small manifest of coloured-noise images, for checking a recipe without a dataset."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    side = max(r.image_size, 32)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        colour = rng.integers(40, 220, 3)
        for i in range(per_class):
            px = np.clip(colour + rng.normal(0, 30, (side, side, 3)), 0, 255).astype(np.uint8)
            path = root / f"c{c}" / f"{i}.png"
            Image.fromarray(px).save(path)
            rows.append((str(path), f"c{c}", "train", 1.0))
    cols = list(zip(*rows, strict=True))
    pq.write_table(
        pa.table({"path": cols[0], "label": cols[1], "split": cols[2], "weight": cols[3]}),
        root / "manifest.parquet",
    )
    return root


def _rank_main(work: Path) -> None:
    """One rank of the check: run the step, write what it saw (the parent compares)."""
    spec = json.loads((work / "spec.json").read_text())
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    rec = first_step(
        Recipe(**spec["recipe"]), spec["data"], _load_setup(spec["setup"]), rank, world
    )
    with atomic_write(work / f"rank{rank}.pt") as f:
        torch.save(rec, f)


if __name__ == "__main__":
    # Run as a rank: through the importable module, so that its Setup class is the one a
    # setup module imports (this file as __main__ would define a second one).
    from thresher.train.ddp_check import _rank_main as rank_main

    rank_main(Path(sys.argv[1]))
