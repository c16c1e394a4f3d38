"""Data parallel: `thresher ddp-check` and `thresher train --nproc`, with real gloo processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from thresher.config import Recipe
from thresher.train.ddp_check import ddp_check

CLI = [sys.executable, "-m", "thresher.cli"]


def check_recipe(**over) -> Recipe:
    """Every source of randomness on: dropout, drop path, crops, rotation, jitter, CutMix."""
    base = dict(
        model="resnet10t",
        image_size=32,
        batch_size=4,
        grad_accum=2,
        workers=0,
        total_steps=10,
        warmup_steps=0,
        cutmix_prob=1.0,
    )
    return Recipe(**{**base, **over})


def verdicts(result) -> dict[str, str]:
    return {f.check: f.verdict for f in result.findings}


def test_thresher_setup_takes_the_same_step_at_world_size_1_and_2(tiny_data):
    res = ddp_check(check_recipe(), tiny_data, nproc=2, timeout_s=240, log=lambda m: None)
    v = verdicts(res)
    assert res.passed, res.findings
    for check in ("initial weights", "samples drawn", "augmented inputs", "loss", "gradients",
                  "weights after the step"):  # fmt: skip
        assert v[check] == "ok", (check, res.findings)
    assert v["batch norm"] == "note"  # resnet10t has batch norm: per-rank statistics named


@pytest.mark.parametrize(
    "setup, check, cause",
    [
        ("ddp_setups:DIFFERENT_SEED", "initial weights", "different seeds per rank"),
        ("ddp_setups:UNSEEDED_SHUFFLE", "samples drawn", "unseeded shuffle"),
        ("ddp_setups:SKIP_BACKWARD", "gradients", "skipped backward"),
    ],
)
def test_each_broken_setup_is_caught_and_named(tiny_data, setup, check, cause):
    res = ddp_check(check_recipe(), tiny_data, 2, setup, timeout_s=120, log=lambda m: None)
    assert not res.passed
    found = {f.check: f for f in res.findings}
    assert found[check].verdict == "differs", res.findings
    assert cause in found[check].cause, res.findings


@pytest.mark.slow
def test_cli_ddp_check_reports_and_sets_the_exit_status(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the table's cells on one line each
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(check_recipe().model_dump(mode="json")))
    ok = subprocess.run([*CLI, "ddp-check", str(recipe), "--nproc", "2"],
                        capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "the same step" in ok.stdout and "generated images" in ok.stderr
    here = str(Path(__file__).parent)
    bad = subprocess.run(
        [*CLI, "ddp-check", str(recipe), "--nproc", "2", "--setup", "ddp_setups:DIFFERENT_SEED"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": here},
    )  # fmt: skip
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "NOT the same step" in bad.stdout and "different seeds per rank" in bad.stdout


def _train(recipe: Path, data: Path, out: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, "train", str(recipe), "--data", str(data), "--out", str(out), "--quiet",
         "--nproc", "2", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip


def ddp_recipe(path: Path) -> Path:
    r = check_recipe(total_steps=16, checkpoint_every=4, eval_every=8, log_every=1, batch_size=8)
    path.write_text(yaml.safe_dump(r.model_dump(mode="json")))
    return path


@pytest.mark.slow
def test_nproc_2_trains_with_one_writer_and_resumes_to_the_same_weights(tiny_data, tmp_path):
    recipe = ddp_recipe(tmp_path / "r.yaml")
    whole = _train(recipe, tiny_data, tmp_path / "whole")
    log, _ = whole.communicate(timeout=600)
    assert whole.returncode == 0, log
    recs = [json.loads(x) for x in (tmp_path / "whole/metrics.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in recs if x["kind"] == "train"]
    assert steps == list(range(1, 17))  # rank 0 alone writes: no step twice
    ck = torch.load(tmp_path / "whole/checkpoint.pt", weights_only=True)
    assert ck["world"] == 2 and len(ck["rng_ranks"]) == 2
    # both ranks' dropout streams are their own
    assert not torch.equal(ck["rng_ranks"][0]["torch"], ck["rng_ranks"][1]["torch"])
    assert log.count("16 steps") == 1  # the summary line, said once

    # Kill the whole process group (torchrun and both ranks) once the step-4 checkpoint exists.
    part = _train(recipe, tiny_data, tmp_path / "part")
    ck_path = tmp_path / "part/checkpoint.pt"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and part.poll() is None:
        if ck_path.exists() and torch.load(ck_path, weights_only=True)["step"] >= 4:
            break
        time.sleep(0.2)
    os.killpg(part.pid, signal.SIGKILL)
    part.wait()
    step_killed = torch.load(ck_path, weights_only=True)["step"]
    assert step_killed < 16, "the run ended before it could be killed: make it longer"
    resumed = _train(recipe, tiny_data, tmp_path / "part", "--resume")
    log, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, log
    a = torch.load(tmp_path / "whole/checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part/checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed DDP run ended with other weights"
