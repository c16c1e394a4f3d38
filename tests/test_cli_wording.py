"""What the CLI says, as a user reads it: real subprocesses, the exact words that matter."""

from __future__ import annotations

import os
import re
import shutil

import pytest
from PIL import Image, ImageDraw

from tests.test_cli import run


def _help(command: str) -> str:
    r = run(command, "--help", env={**os.environ, "COLUMNS": "400"})
    assert r.returncode == 0, r.stderr
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", r.stdout).split())  # the words, unwrapped


def test_scan_help_shows_the_ray_extra_with_its_brackets():
    assert "pip install 'thresher[ray]'" in _help("scan")


@pytest.mark.parametrize("command", ["clean", "review", "export", "issues"])
def test_commands_that_need_a_workspace_never_say_it_is_created(command):
    text = _help(command)
    assert "created if missing" not in text and "made by `thresher scan`" in text
    assert "created if missing" in _help("scan")  # scan does create it


def test_train_on_an_image_folder_or_a_missing_path(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("{}\n")
    images = tmp_path / "photos"
    for c in ("cat", "dog"):
        (images / c).mkdir(parents=True)
    r = run("train", recipe, "--data", images)
    assert r.returncode == 2 and "looks like an image folder, not an export" in r.stderr
    assert f"--out {images}" not in r.stderr  # never export into the image source
    r = run("train", recipe, "--data", tmp_path / "nope")
    assert r.returncode == 2
    assert f"--data {tmp_path / 'nope'}: no such folder or file" in r.stderr


def test_a_typo_in_a_config_key_gets_a_did_you_mean(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("min_short_side: 384\n")
    r = run("clean", "-w", tmp_path / "ws", "--config", cfg)
    assert r.returncode == 2
    assert 'unknown key "min_short_side" (did you mean "min_short_side_px"?)' in r.stderr


def test_cost_of_a_short_run_is_not_zero_hours():
    r = run("cost", "--steps", "1000", env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert "0.0 h" not in r.stdout and re.search(r"\d+ (s|min)\b", r.stdout)


def test_doctor_warns_about_resnet50_on_a_cpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("{}\n")  # the default recipe: resnet50 at 224 px
    r = run("doctor", "--recipe", recipe, "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "warning: no CUDA GPU: resnet50" in r.stdout
    assert "no problem found, 1 warning" in r.stdout


def test_one_duplicate_group_is_singular(tmp_path):
    crawl = tmp_path / "crawl"
    for k, c in enumerate(("cat", "dog")):
        (crawl / c).mkdir(parents=True)
        for i in range(3):
            im = Image.new("RGB", (640, 600), (40 * i, 90 + 60 * k, 200 - 50 * i))
            draw = ImageDraw.Draw(im)
            for j in range(6):  # distinct shapes: no two files alike but the copy
                x, y = (97 * (i + 3 * k + j)) % 500, (61 * (j + 2 * i + k)) % 450
                draw.ellipse(
                    (x, y, x + 40 + 20 * j, y + 60 + 9 * i), fill=(255 - 40 * j, 30 * j, 80)
                )
            im.save(crawl / c / f"{i}.png")
    shutil.copy(crawl / "cat" / "0.png", crawl / "cat" / "copy.png")
    ws = tmp_path / "ws"
    assert run("scan", crawl, "-w", ws, "--no-embed", "--workers", "0").returncode == 0
    r = run("clean", "-w", ws, "--no-report", env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert "; 1 duplicate group;" in r.stdout


def test_export_warns_of_classes_with_few_validation_images(cleaned_copy, tmp_path):
    r = run("export", "-w", cleaned_copy, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    said = r.stdout + r.stderr
    assert re.search(r"warning: \d+ class\(es\) have under 10 validation images \(", said), said
