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
from thresher.guard.thermal import ScriptedSensor, ThermalGuard, thermal_action

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
