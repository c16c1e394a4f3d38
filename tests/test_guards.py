"""Guards: each decision function on plain numbers, then each guard acting in a real run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from guard_helpers import colour_set, long_epochs

from thresher.guard.memory import sustained_growth, theil_sen_slope
from thresher.guard.numeric import classify, robust_spike
from thresher.guard.progress import loss_shape, overfitting, plateaued, regularisers_off
from thresher.guard.thermal import NvmlSensor, ScriptedSensor, ThermalGuard, thermal_action

TESTS = Path(__file__).parent

# -- decisions on numbers --------------------------------------------------------------------------


def test_numeric_verdicts_on_a_series():
    rng = np.random.default_rng(0)
    series = list(1.0 + 0.05 * rng.normal(size=40)) + [30.0, 1.02, float("nan"), 1.3, float("inf")]
    v = classify(series, window=100, z=8, ratio=5, warmup=20)
    assert v[:40] == ["ok"] * 40
    assert v[40:] == ["spike", "ok", "nonfinite", "ok", "nonfinite"]  # 1.3 is a wobble
    assert classify([1.0] * 5 + [100.0], warmup=20)[-1] == "ok"  # no baseline yet: no spike
    assert not robust_spike(2.0, np.full(50, 1.0), z=8, ratio=5)  # 2x is not 5x


def test_progress_decisions():
    assert plateaued([0.5, 0.6, 0.61, 0.605, 0.609, 0.61], patience=3)
    assert not plateaued([0.5, 0.6, 0.61, 0.62, 0.63], patience=3)
    assert overfitting([0.8, 0.9, 0.99], [0.7, 0.66, 0.62], gap=0.15)
    assert not overfitting([0.8, 0.9, 0.99], [0.78, 0.88, 0.95], gap=0.15)
    assert not overfitting([0.9, 0.95, 0.99], [0.6, 0.7, 0.8], gap=0.15)  # big, but shrinking
    from thresher.config import Recipe

    off = regularisers_off(Recipe(drop_rate=0, label_smoothing=0, cutmix="off"))
    assert {"dropout (drop_rate)", "label smoothing", "CutMix"} <= set(off)
    assert regularisers_off(Recipe()) == []  # the reported recipe has them all on
    assert "too high" in loss_shape([1.0, 1.1] * 5 + [3.0, 2.5] * 5)
    assert "too low" in loss_shape([2.3] * 20)
    assert loss_shape(list(np.linspace(2.3, 0.5, 20))) is None


def test_theil_sen_and_sustained_growth():
    t = np.arange(0, 300, 5.0)
    y = 3 * 2**20 * t + np.random.default_rng(0).normal(0, 2**20, len(t))
    y[10] += 500 * 2**20  # one burst does not move a robust slope
    assert theil_sen_slope(t, y) == pytest.approx(3 * 2**20, rel=0.05)
    alarm, slope = sustained_growth(t, y, 2**20, sustain_s=180, window_s=120)
    assert alarm and slope == pytest.approx(3 * 2**20, rel=0.1)
    flat = 2**30 + np.random.default_rng(1).normal(0, 4 * 2**20, len(t))
    assert not sustained_growth(t, flat, 2**20, 180, 120)[0]
    # A cache that fills for a minute, then stays: growth, but not sustained.
    cache = np.minimum(t, 60) * 5 * 2**20
    assert not sustained_growth(t, cache, 2**20, 180, 120)[0]


def test_thermal_pauses_until_cool_and_records_it():
    assert thermal_action(70, False, 83, 88, 80) == "ok"
    assert thermal_action(85, False, 83, 88, 80) == "warn"
    assert thermal_action(88, False, 83, 88, 80) == "pause"
    assert thermal_action(82, True, 83, 88, 80) == "wait"
    assert thermal_action(79, True, 83, 88, 80) == "resume"
    clock = [0.0]
    guard = ThermalGuard(
        ScriptedSensor([70, 85, 86, 91, 89, 84, 79, 70]),
        poll_s=10,
        sleep=lambda s: clock.__setitem__(0, clock[0] + s),
        clock=lambda: clock[0],
    )
    said = []
    for step in range(6):
        guard.check(step, lambda kind, msg: said.append(kind))
        clock[0] += 10
    assert said == ["thermal", "thermal_pause", "thermal_resume"]  # warned once, paused once
    assert guard.pauses == [{"step": 3, "seconds": 30.0, "peak_c": 91.0}]


# -- each guard acting, on a tiny state (milliseconds) ---------------------------------------------


def _tiny_state(opt: str = "adamw", lr: float = 1e-3):
    """A RunState around a 2-layer model with batch norm: what a hook sees in a real run."""
    from thresher.train.state import RunState

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8),
                                torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 4))  # fmt: skip
    if opt == "lion":
        from timm.optim import Lion

        o = Lion(model.parameters(), lr=lr)
    else:
        o = torch.optim.AdamW(model.parameters(), lr=lr)
    state = RunState(model, o, torch.amp.GradScaler("cpu", enabled=False))
    x, y = torch.randn(16, 3, 2, 2), torch.arange(16) % 4
    state.batch = (x, y)
    return state


def _backward(state) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = state.batch
    loss = torch.nn.functional.cross_entropy(state.model(x), y)
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for p in state.model.parameters()]
    return loss.detach(), torch.nn.utils.get_total_norm(grads)


def test_hook_verdicts_combine_to_the_strongest_action():
    from thresher.guard.hooks import Event, Verdict, combine

    v = combine([Verdict("recycle", [Event("a", "1")]), Verdict("skip", [Event("b", "2")]),
                 Verdict()])  # fmt: skip
    assert v.action == "skip" and [e.kind for e in v.events] == ["a", "b"]
    assert combine([]).action == "go"
    with pytest.raises(ValueError):
        Verdict("explode")


def test_numeric_guard_skips_restores_buffers_rolls_back_then_stops():
    from thresher.config import GuardConfig
    from thresher.guard.numeric import NumericGuard

    state = _tiny_state()
    g = NumericGuard(GuardConfig(max_consecutive_bad=2, max_rollbacks=1), 4, samples_per_step=16)
    g.start(state)
    assert g.snapshot.step == 0
    g.before_step(state)
    assert g.after_backward(state, *_backward(state)).action == "go"
    state.opt.step()
    state.step, state.position = 1, 16
    g.after_step(state, None)
    bn = state.model[2].running_mean
    good = bn.clone()
    g.before_step(state)
    bn.fill_(float("nan"))  # a poisoned forward pass writes NaN into the statistics
    v = g.after_backward(state, torch.tensor(float("nan")), torch.tensor(1.0))
    assert v.action == "skip" and v.events[0].kind == "numeric_skip"
    assert "loss nan" in v.events[0].message and "samples 0-16" in v.events[0].message
    assert torch.equal(bn, good)  # put back as the step began
    g.before_step(state)
    v = g.after_backward(state, torch.tensor(1.0), torch.tensor(float("inf")))
    assert v.action == "rollback" and v.snapshot.step == 0 and v.lr_factor == 0.5
    state.roll_back(v.snapshot, v.lr_factor)
    assert state.step == 0 and state.lr_scale == 0.5
    for _ in range(2):
        g.before_step(state)
        v = g.after_backward(state, torch.tensor(float("nan")), torch.tensor(1.0))
    assert v.action == "stop" and "First bad step" in v.reason and "x0.5" in v.reason
    # before a checkpoint: a non-finite model is never written, it is rolled back or stopped
    g2 = NumericGuard(GuardConfig(), 4)
    g2.start(state)
    assert g2.before_checkpoint(state).action == "go"
    state.model[1].weight.data[0, 0] = float("nan")
    assert g2.before_checkpoint(state).action == "rollback"


@pytest.mark.parametrize("optimizer", ["adamw", "lion"])
def test_numeric_guard_acts_on_lr_100_with_adamw_and_lion(optimizer):
    # The explosion stays finite (loss 1e4, weights 1e16 in the field): the divergence rule
    # and the weight-norm check catch it, where the NaN and spike tests alone did not.
    from thresher.config import GuardConfig
    from thresher.guard.numeric import NumericGuard, diverged

    assert diverged(1e4, 1.4, 4, 100) and not diverged(50.0, 1.4, 4, 100)
    assert not diverged(100.0, 2.0, 1000, 100)  # ln(1000) x 100 = 690: not yet
    for snapshot_every in (1000, 1):  # the loss rule alone; the weights' norm first
        state = _tiny_state(optimizer, lr=100.0)
        g = NumericGuard(GuardConfig(snapshot_every=snapshot_every), 4, 16)
        g.start(state)
        actions, kinds = [], []
        for _ in range(20):
            g.before_step(state)
            v = g.after_backward(state, *_backward(state))
            if v.action == "go":
                state.opt.step()
                state.step += 1
                v = g.after_step(state, None)
            actions.append(v.action)
            kinds += [e.kind for e in v.events]
            if v.action == "rollback":
                state.roll_back(v.snapshot, v.lr_factor)
            if v.action == "stop":
                break
        assert "rollback" in actions and actions[-1] == "stop", (optimizer, actions)
        assert "numeric_rollback" in kinds


def test_progress_guard_names_overfitting_and_diagnoses_a_plateau():
    from thresher.guard.progress import ProgressGuard

    state = _tiny_state()
    r = _recipe(drop_rate=0, guards={"plateau_patience": 2, "overfit_gap": 0.2,
                                     "stop_on_overfit": True})  # fmt: skip
    g = ProgressGuard(r, 4, [], label_error_share=0.5)
    for step, (train_acc, val) in enumerate([(0.5, 0.5), (0.8, 0.5), (0.95, 0.45)]):
        g.after_step(state, {"loss": 1.4})
        state.step, state.best = step, 0.5
        v = g.after_eval(state, {"accuracy": val, "train_accuracy": train_acc})
    kinds = [e.kind for e in v.events]
    assert kinds == ["overfit", "plateau"] and v.action == "finish" and v.reason == "overfitting"
    assert "dropout (drop_rate)" in v.events[0].message
    plateau = v.events[1].message
    assert "overfit one batch" in plateau and "50% of the labels" in plateau
    rng = torch.get_rng_state()
    g.after_eval(state, {"accuracy": 0.3, "train_accuracy": 0.99})
    assert torch.equal(rng, torch.get_rng_state())  # warned once each; the RNG untouched


def test_progress_guard_names_a_loss_far_above_chance_after_warmup_with_the_logit_scale():
    from thresher.guard.progress import ProgressGuard, far_above_chance

    assert far_above_chance([1.4, 1.5, 1.3], 4, 2.0) is None  # near ln 4 = 1.39: learning
    assert far_above_chance([9.0, 9.0], 4, 2.0) is None  # too few to call
    assert far_above_chance([9.0, 8.0, 10.0], 4, 2.0) == 9.0
    state = _tiny_state()
    with torch.no_grad():
        state.model[-1].weight.mul_(50)  # a head far off: logits tens of units apart
    g = ProgressGuard(_recipe(warmup_steps=2), 4, [], label_error_share=None)
    kinds = []
    for step in range(1, 9):
        state.step = step
        kinds += [e.kind for e in g.after_step(state, {"loss": 9.0}).events]
    assert kinds == ["far_from_chance"]  # after warm-up (steps 3-5 logged), once
    g2 = ProgressGuard(_recipe(warmup_steps=2), 4, [], label_error_share=None)
    msg = None
    for step in range(1, 6):
        state.step = step
        v = g2.after_step(state, {"loss": 9.0})
        msg = v.events[0].message if v.events else msg
    assert "ln(4)" in msg and "logits spread" in msg and "head" in msg
    spread = float(msg.split("logits spread ")[1].split(" ")[0])
    assert spread > 5
    quiet = ProgressGuard(_recipe(warmup_steps=2), 4, [], label_error_share=None)
    for step in range(1, 9):
        state.step = step
        assert not quiet.after_step(state, {"loss": 1.5}).events


def test_leak_guard_recycles_workers_for_a_worker_leak_only():
    from thresher.config import GuardConfig
    from thresher.guard.memory import Alarm, LeakGuard

    class Watch:
        pid, found, forgot = 100, [], 0

        def alarms(self):
            found, self.found = self.found, []
            return found

        def forget_children(self):
            self.forgot += 1

    w = Watch()
    g = LeakGuard(GuardConfig(), workers=2, watch=w)
    state = _tiny_state()
    state.step = 7
    assert g.on_timer(state).action == "go"
    w.found = [Alarm("a DataLoader worker", 101, 3.0, 5.0)]
    v = g.on_timer(state)
    assert v.action == "recycle" and w.forgot == 1 and "recycling" in v.events[0].message
    w.found = [Alarm("the training process", 100, 3.0, 5.0)]
    v = g.on_timer(state)
    assert v.action == "go" and "does not help" in v.events[0].message
    every = LeakGuard(GuardConfig(recycle_workers_every=7), workers=2, watch=Watch())
    assert every.on_timer(state).action == "recycle"
    assert LeakGuard(GuardConfig(), workers=0, watch=w).on_timer(state).action == "go"


def test_gpu_memory_guard_names_growth_once():
    from thresher.config import GuardConfig
    from thresher.guard.memory import GpuMemoryGuard

    t = [0.0]
    g = GpuMemoryGuard(GuardConfig(leak_sustain_s=30, leak_window_s=20),
                       allocated=lambda: t[0] * 5 * 2**20, clock=lambda: t[0])  # fmt: skip
    said = []
    for _ in range(40):
        t[0] += 2
        said += [e.kind for e in g.after_step(None, {"loss": 1.0}).events]
        assert g.after_step(None, None).events == []  # only at metrics lines
    assert said == ["gpu_memory_growth"]


def test_thermal_guard_asks_for_a_pause_and_its_wait_resumes():
    clock = [0.0]
    g = ThermalGuard(ScriptedSensor([91, 85, 79]), poll_s=5,
                     sleep=lambda s: clock.__setitem__(0, clock[0] + s),
                     clock=lambda: clock[0])  # fmt: skip
    state = _tiny_state()
    state.step = 4
    v = g.on_timer(state)
    assert v.action == "pause" and v.events[0].kind == "thermal_pause"
    assert [e.kind for e in v.wait()] == ["thermal_resume"]
    assert g.pauses == [{"step": 4, "seconds": 10.0, "peak_c": 91.0}]


def test_skipped_samples_guard_names_the_first_and_stops_past_the_share():
    from thresher.data.skipped import SkippedSamples
    from thresher.guard.samples import SkippedSamplesGuard

    skipped = SkippedSamples()
    g = SkippedSamplesGuard(skipped, max_share=0.05, samples_per_step=10)
    state = _tiny_state()
    state.step = 10
    assert g.on_timer(state).events == []
    skipped.record("/data/a.jpg", "user_transform m:f raised ValueError: odd")
    v = g.on_timer(state)
    assert v.action == "go" and v.events[0].kind == "sample_skipped"
    assert "m:f" in v.events[0].message and "/data/a.jpg" in v.events[0].message
    for _ in range(5):  # 6 of 100 samples
        skipped.record("/data/b.jpg", "user_transform m:f raised ValueError: odd")
    v = g.on_timer(state)
    assert v.action == "finish" and "6 of about 100" in v.reason and "m:f" in v.reason
    assert g.on_timer(state).events == []  # said once


def test_skipped_share_after_resume_counts_this_sessions_samples_only():
    from thresher.data.skipped import SkippedSamples
    from thresher.guard.samples import SkippedSamplesGuard

    skipped = SkippedSamples()  # a resumed session counts from 0 ...
    g = SkippedSamplesGuard(skipped, max_share=0.05, samples_per_step=10)
    state = _tiny_state()
    state.step = 9000  # ... but resumes late in the run
    g.start(state)
    state.step = 9010
    for _ in range(20):  # 20 of this session's 100 samples: broken, whatever came before
        skipped.record("/data/b.jpg", "user_transform m:f raised ValueError: odd")
    v = g.on_timer(state)
    assert v.action == "finish" and "20 of about 100" in v.reason


# -- guards in real runs ---------------------------------------------------------------------------


def _recipe(**over):
    from thresher.config import Recipe

    base = dict(model="resnet10t", image_size=32, total_steps=12, warmup_steps=2, batch_size=8,
                grad_accum=1, workers=0, eval_every=6, checkpoint_every=3, log_every=1, lr=2e-3,
                rotation=0, color_jitter=0)  # fmt: skip
    guards = over.pop("guards", {})
    return Recipe(**{**base, **over}, guards={"memory": False, **guards})


def _events(run: Path) -> list[dict]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["kind"] == "event"]


def _finite_checkpoints(run: Path) -> int:
    n = 0
    for name in ("checkpoint.pt", "best.pt"):
        if (run / name).exists():
            ck = torch.load(run / name, weights_only=True)
            assert all(
                torch.isfinite(t).all() for t in ck["model"].values() if t.is_floating_point()
            )
            n += 1
    return n


@pytest.mark.slow
def test_a_poisoned_batch_is_skipped_and_recorded(tmp_path):
    from thresher.train.loop import train

    data = colour_set(tmp_path / "d", poison_one=True)
    r = _recipe(total_steps=30, user_transform="guard_helpers:poison", cutmix="off",
                guards={"baseline_min_steps": 5})  # fmt: skip
    sys.path.insert(0, str(TESTS))
    s = train(r, data, tmp_path / "run", progress=False, log=lambda m: None)
    skips = [e for e in _events(tmp_path / "run") if e["event"] == "numeric_skip"]
    assert skips and s.steps == 30 and s.stopped_by is None  # skipped, the run went on
    assert "loss nan" in skips[0]["message"] and "samples" in skips[0]["message"]
    assert _finite_checkpoints(tmp_path / "run") == 2


def test_a_learning_rate_far_too_high_is_rolled_back_or_stopped_never_saved(tmp_path):
    from thresher.train.loop import train

    data = colour_set(tmp_path / "d")
    r = _recipe(total_steps=40, optimizer="sgd", lr=1e6, warmup_steps=0, grad_clip=None,
                guards={"max_consecutive_bad": 2, "max_rollbacks": 2,
                        "baseline_min_steps": 3})  # fmt: skip
    s = train(r, data, tmp_path / "run", progress=False, log=lambda m: None)
    kinds = [e["event"] for e in _events(tmp_path / "run")]
    assert "numeric_skip" in kinds and "numeric_rollback" in kinds
    assert s.stopped_by is not None and kinds[-1] == "stop"
    assert "First bad step" in s.stopped_by and "LR" in s.stopped_by
    assert "grad" in s.stopped_by and "Likely" in s.stopped_by
    _finite_checkpoints(tmp_path / "run")  # whatever was written is finite
    html = (tmp_path / "run" / "report.html").read_text()
    assert "numeric_rollback" in html and "stop" in html  # the report lists the events


@pytest.mark.slow
def test_overfitting_and_a_plateau_are_named(tmp_path):
    from thresher.train.loop import train

    data = colour_set(tmp_path / "d", wrong_val=True)  # validation can only get worse
    r = _recipe(total_steps=40, eval_every=4, drop_rate=0, drop_path_rate=0, cutmix="off",
                guards={"plateau_patience": 2, "overfit_gap": 0.3,
                        "stop_on_overfit": True})  # fmt: skip
    s = train(r, data, tmp_path / "run", progress=False, log=lambda m: None)
    events = {e["event"]: e["message"] for e in _events(tmp_path / "run")}
    assert "overfit" in events and "dropout (drop_rate)" in events["overfit"]
    assert s.stopped_by == "overfitting" and s.steps < 40
    assert "plateau" in events and "overfit one batch" in events["plateau"]
    assert (tmp_path / "run" / "best.pt").exists()


@pytest.mark.slow
def test_lr_100_with_the_default_optimizer_is_caught_and_stopped(tmp_path):
    # Lion (the default) at lr 100: the loss goes to 1e4 and stays finite; the guard must act.
    from thresher.train.loop import train

    data = colour_set(tmp_path / "d")
    r = _recipe(total_steps=40, lr=100.0, warmup_steps=0, guards={"max_rollbacks": 2})
    assert r.optimizer == "lion"
    s = train(r, data, tmp_path / "run", progress=False, log=lambda m: None)
    kinds = [e["event"] for e in _events(tmp_path / "run")]
    assert "numeric_skip" in kinds and "numeric_rollback" in kinds and kinds[-1] == "stop"
    assert s.stopped_by is not None and "First bad step" in s.stopped_by and s.steps < 40
    _finite_checkpoints(tmp_path / "run")


@pytest.mark.slow
def test_a_raising_user_transform_skips_and_counts_then_stops_past_the_share(tmp_path):
    from thresher.train.loop import train

    sys.path.insert(0, str(TESTS))
    data = colour_set(tmp_path / "d", poison_one=True)
    # One image in 81 raises: skipped, counted, named once; the run goes on to its end.
    r = _recipe(total_steps=12, user_transform="guard_helpers:refuse_magenta")
    s = train(r, data, tmp_path / "one", progress=False, log=lambda m: None)
    skipped = [e for e in _events(tmp_path / "one") if e["event"] == "sample_skipped"]
    assert s.steps == 12 and s.stopped_by is None and s.skipped_samples >= 1
    assert len(skipped) == 1 and "guard_helpers:refuse_magenta" in skipped[0]["message"]
    assert "magenta.png" in skipped[0]["message"] and "ValueError" in skipped[0]["message"]
    # A quarter of the images raise: past max_skipped_share, the run ends with a diagnosis
    # and a checkpoint to resume from once the transform is fixed.
    r = _recipe(total_steps=40, user_transform="guard_helpers:refuse_red")
    s = train(r, data, tmp_path / "many", progress=False, log=lambda m: None)
    assert s.steps < 40 and s.interrupted and "refuse_red" in s.stopped_by
    assert "max_skipped_share" in s.stopped_by
    ck = torch.load(tmp_path / "many" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == s.steps


def test_a_transform_that_always_raises_stops_in_one_line_from_the_workers(tmp_path):
    # No batch ever completes, so the share guard cannot judge: the dataset gives up after a
    # run of failures, and the error crosses the DataLoader worker as one line, not a traceback.
    data = colour_set(tmp_path / "d")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: resnet10t\nimage_size: 32\ntotal_steps: 4\nwarmup_steps: 1\n"
                      "batch_size: 8\ngrad_accum: 1\nworkers: 1\n"
                      "user_transform: guard_helpers:refuse_all\nguards: {memory: false}\n")
    p = _cli(recipe, data, tmp_path / "run")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2, err
    assert "Traceback" not in err and "Original" not in err, err
    line = err.strip().splitlines()[-1]
    assert "refuse_all" in line and "in a row" in line and "cannot handle anything" in line


@pytest.mark.slow
def test_a_hot_gpu_pauses_the_run(tmp_path):
    from thresher.train.loop import train

    sys.path.insert(0, str(TESTS))
    data = colour_set(tmp_path / "d")
    r = _recipe(guards={"thermal_sensor": "guard_helpers:hot_sensor", "thermal_poll_s": 0.01})
    s = train(r, data, tmp_path / "run", progress=False, log=lambda m: None)
    kinds = [e["event"] for e in _events(tmp_path / "run")]
    assert kinds.count("thermal_pause") == 1 and kinds.count("thermal_resume") == 1
    assert s.steps == 12


def _cli(recipe: Path, data: Path, out: Path):
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.Popen(
        [sys.executable, "-m", "thresher.cli", "train", str(recipe), "--data", str(data),
         "--out", str(out), "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


@pytest.mark.slow
def test_a_leaking_transform_is_named_within_two_minutes_and_a_clean_run_is_not(tmp_path):
    import yaml

    data = long_epochs(colour_set(tmp_path / "d"), 200)  # 16,000 samples an epoch
    guards = {"memory": True, "memory_interval_s": 1.0, "memory_warmup_s": 10.0,
              "leak_mb_per_s": 1.0, "leak_sustain_s": 45.0, "leak_window_s": 30.0}  # fmt: skip
    common = dict(total_steps=100_000, workers=1, eval_every=10**6, checkpoint_every=10**6,
                  log_every=50, guards=guards)  # fmt: skip
    for name, extra in (
        ("leak", {"user_transform": "guard_helpers:leak_3mb_per_s"}),
        ("clean", {}),
    ):
        r = _recipe(**common, **extra)
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(r.model_dump(mode="json")))
    leak = _cli(tmp_path / "leak.yaml", data, tmp_path / "leak")
    clean = _cli(tmp_path / "clean.yaml", data, tmp_path / "clean")
    t0 = time.monotonic()
    found = None
    try:
        while time.monotonic() - t0 < 120 and found is None:
            assert leak.poll() is None, leak.stderr.read()
            if (tmp_path / "leak" / "metrics.jsonl").exists():
                found = next((e for e in _events(tmp_path / "leak")
                              if e["event"] == "memory_leak"), None)  # fmt: skip
            time.sleep(1)
        assert found is not None, "no leak alarm within 2 minutes"
        msg = found["message"]
        assert "DataLoader worker" in msg and "recycling" in msg
        rate = float(msg.split(" grows ")[1].split(" MB/s")[0])
        assert 1.5 < rate < 6.0, msg
        assert "gone in" in msg
        leak.send_signal(signal.SIGINT)
        leak.communicate(timeout=60)
        assert any(e["event"] == "recycle_workers" for e in _events(tmp_path / "leak"))
        while time.monotonic() - t0 < 300:  # the clean run: five minutes, no alarm
            assert clean.poll() is None, clean.stderr.read()
            time.sleep(2)
        clean.send_signal(signal.SIGINT)
        clean.communicate(timeout=60)
        assert not [e for e in _events(tmp_path / "clean") if e["event"] == "memory_leak"]
        steps = [json.loads(x)["step"] for x in (tmp_path / "clean" / "metrics.jsonl")
                 .read_text().splitlines()]  # fmt: skip
        assert max(steps) >= 100  # it really trained meanwhile
    finally:
        for p in (leak, clean):
            if p.poll() is None:
                p.kill()


def test_the_nvml_sensor_finds_torchs_card_by_uuid_not_by_number(monkeypatch):
    # NVML cannot exist here (no NVIDIA driver): a stand-in module with NVML's two lookups.
    # With CUDA_VISIBLE_DEVICES=2,3 torch's device 0 is NVML's card 2: the UUID must decide.
    import types

    cards = {0: "GPU-aaaa", 1: "GPU-bbbb", 2: "GPU-cccc"}
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: cards[i],
        nvmlDeviceGetHandleByUUID=lambda u: next(c for c in cards.values() if c == u),
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda d: types.SimpleNamespace(uuid="cccc")
    )
    assert NvmlSensor.for_torch_device(0).handle == "GPU-cccc"
    assert NvmlSensor(0).handle == "GPU-aaaa"  # by number: another card
