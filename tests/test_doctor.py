"""`thresher doctor`: the machine report, the batch-size estimate, and the pipeline leak check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from guard_helpers import colour_set

from thresher.config import Recipe
from thresher.doctor import activation_bytes_per_image, bottleneck, doctor, largest_batch

TESTS = Path(__file__).parent


def test_machine_report_and_batch_estimate(tmp_path):
    rep = doctor(out=tmp_path)
    what = {row[0]: row[1] for row in rep.machine}
    assert what["python"].startswith("3.") and "/" in what["torch / torchvision / timm"]
    assert (
        any(k.startswith("free disk at") for k in what) and "GiB" in what["RAM total / available"]
    )
    assert rep.gpus and not rep.pipeline  # no recipe: no pipeline checks
    import timm

    model = timm.create_model("resnet10t", num_classes=4)
    small, big = activation_bytes_per_image(model, 32), activation_bytes_per_image(model, 64)
    assert 3.5 < big / small < 4.5  # activations scale with the pixels
    n_small, how = largest_batch(Recipe(model="resnet10t", image_size=32, grad_checkpointing=False))
    n_big, _ = largest_batch(Recipe(model="resnet10t", image_size=128, grad_checkpointing=False))
    assert n_small > n_big > 0 and "estimated for the CPU" in how


def _doctor_cli(tmp_path, **over):
    tmp_path.mkdir(parents=True, exist_ok=True)
    r = Recipe(model="resnet10t", image_size=32, batch_size=8, workers=1, **over)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r.model_dump(mode="json")))
    data = colour_set(tmp_path / "d")
    return subprocess.run(
        [sys.executable, "-m", "thresher.cli", "doctor", "--recipe", tmp_path / "r.yaml",
         "--data", data, "--out", tmp_path],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(TESTS), "COLUMNS": "200"},
    )  # fmt: skip


@pytest.mark.slow
def test_the_pipeline_check_names_a_leaking_augmentation_and_passes_a_clean_one(tmp_path):
    r = _doctor_cli(tmp_path / "leak", user_transform="guard_helpers:leak_3mb_per_s")
    assert r.returncode == 1, r.stderr
    assert "problem: the augmentation pipeline's worst worker grows" in r.stdout
    rate = float(r.stdout.split("worst worker grows ")[1].split(" MB/s")[0])
    assert 1.5 < rate < 6.0
    r = _doctor_cli(tmp_path / "clean")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "DataLoader throughput" in r.stdout and "no problem found" in r.stdout
    assert "training step of resnet10t" in r.stdout and "bottleneck" in r.stdout


def test_the_bottleneck_verdict_names_the_slower_side_and_what_to_change():
    # The H200: 4 workers give 1,894 images/s, ResNet-50 AMP steps at 4,442.
    b = bottleneck(1894, 4442, workers=4, cores=16, image_size=224, batch_size=128)
    assert b.side == "loader" and b.images_per_s == 1894
    assert b.device_idle_share == pytest.approx(1 - 1894 / 4442)
    assert "raise workers from 4 to 10" in b.advice and "448 px" in b.advice
    full = bottleneck(1894, 4442, workers=15, cores=16, image_size=224, batch_size=128)
    assert "every core already decodes" in full.advice and "raise workers" not in full.advice
    # This CPU: the loader far outruns a model step on the CPU.
    m = bottleneck(900, 40, workers=2, cores=2, image_size=224, batch_size=64)
    assert m.side == "model" and m.images_per_s == 40 and m.device_idle_share == 0
    assert "mixed precision" in m.advice and "1 worker would still keep up" in m.advice
    even = bottleneck(1000, 1050, workers=8, cores=16, image_size=224, batch_size=64)
    assert even.side == "balanced" and even.images_per_s == 1000
