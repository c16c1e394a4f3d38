"""Issue 18, recipes, manifests and the command line: every bad input is one clear line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from thresher.config import Recipe, load_yaml
from thresher.data.manifest import load_manifest
from thresher.errors import ThresherError


@pytest.mark.parametrize(
    "text, words",
    [
        (b"betas: [2, 3]\n", "betas [2.0, 3.0]: each must be in [0, 1)"),
        (b"model: caf\xe9\n", "is not UTF-8 text (byte 0xe9 at offset 10)"),
        (b"crop_scale: [1.0, 0.5]\n", "crop_scale [1.0, 0.5]: needs 0 < low <= high <= 1"),
        (b"crop_scale: [0, 0]\n", "crop_scale [0.0, 0.0]"),
        (b"lr: 0.1\nmin_lr: 1\n", "min_lr 1 is above lr 0.1"),
        (b"warmup_steps: 600\ntotal_steps: 500\n", "warmup_steps 600 is more than total_steps"),
        (b"lr: 0.1\nbatch_size: 8\nlr: 0.2\n", "line 3, column 1: the key 'lr' is given twice"),
        (b"lr: [1\nmodel: x\n", "line 2, column"),
        (b"image_size: 100000\n", "image_size 100000 px is over 4096"),
    ],
)
def test_bad_recipes_are_one_line(tmp_path, text, words):
    (tmp_path / "r.yaml").write_bytes(text)
    with pytest.raises(ThresherError) as e:
        load_yaml(tmp_path / "r.yaml", Recipe)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_bad_yaml_syntax_is_one_line_at_the_cli(tmp_path):
    (tmp_path / "r.yaml").write_text("lr: 0.1\n  bad: [\n")
    r = subprocess.run(
        [sys.executable, "-m", "thresher.cli", "doctor", "--recipe", str(tmp_path / "r.yaml")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "r.yaml line 2" in r.stderr


def _images(folder, n=2):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (40, 30), (10 * i, 90, 200)).save(folder / f"{i}.png")


def test_relative_manifest_paths_are_read_from_the_manifest_folder(tmp_path, monkeypatch):
    _images(tmp_path / "data" / "img")
    (tmp_path / "data" / "m.csv").write_text("path,label\nimg/0.png,a\nimg/1.png,b\n")
    monkeypatch.chdir(tmp_path)  # not the manifest's folder
    m = load_manifest(tmp_path / "data" / "m.csv")
    assert [p.decode() for p in m.paths] == [
        str(tmp_path / "data" / "img" / f"{i}.png") for i in (0, 1)
    ]


@pytest.mark.parametrize(
    "rows, words",
    [
        ("nope/1.png,a\nnope/2.png,b\n", "none of the first 2 files"),
        ("/etc/passwd,a\n/etc/hostname,b\n", "is a readable image"),
        ("img/0.png,a\nimg/1.png,a\n", "1 class(es) (a): a classifier needs at least two"),
        ('img/0.png,a\nimg/1.png,""\n', "1 row(s) without a label (first: row 2)"),
    ],
)
def test_bad_manifests_are_one_line(tmp_path, rows, words):
    _images(tmp_path / "img")
    (tmp_path / "m.csv").write_text("path,label\n" + rows)
    with pytest.raises(ThresherError) as e:
        load_manifest(tmp_path / "m.csv")
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_file_turned_fifo_is_skipped_by_the_dataset_not_waited_on(tmp_path):
    from thresher.data.dataset import ImageDataset

    _images(tmp_path)
    os.mkfifo(tmp_path / "pipe.png")
    paths = np.array([str(tmp_path / "pipe.png").encode(), str(tmp_path / "0.png").encode()])
    ds = ImageDataset(paths, np.array([0, 1]), transform=lambda im: im.size)

    class Hung(Exception):  # not an OSError, which the dataset would take for a bad file
        pass

    def hung(*_):
        raise Hung("the dataset blocked on a FIFO")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # the next sample stood in, with its own label (not the unreadable file's)
            assert ds[0] == ((40, 30), 1)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert "FIFO" in str(caught[0].message)


def test_cli_negative_workers_is_a_usage_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "thresher.cli", "scan", str(tmp_path), "--workers", "-3"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (
        r.returncode == 2
        and "Traceback" not in r.stderr
        and "greater than or equal to 0" in r.stderr
    )


def test_a_junk_weights_file_is_named_with_what_it_should_be(tmp_path):
    from thresher.scan.embed import EmbedderUnavailable, load_embedder

    for junk in (b"this is not a weights file\n", os.urandom(4096)):
        (tmp_path / "w.pth").write_bytes(junk)
        with pytest.raises(EmbedderUnavailable) as e:
            load_embedder("torchvision:mobilenet_v2", tmp_path / "w.pth")
        msg = str(e.value)
        assert "cannot load --weights" in msg and "not a PyTorch state dict" in msg, msg
        assert "weights_only` set to `False`" not in msg  # no advice to run untrusted code
