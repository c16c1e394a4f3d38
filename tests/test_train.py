"""Training: balance, recipe, model groups, schedule, the loop, its checkpoints and report."""

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

from thresher.config import Recipe
from thresher.data.balance import (
    BalancedSampler,
    epoch_indices,
    minority_classes,
    minority_cutmix,
    smooth_one_hot,
)
from thresher.data.manifest import load_manifest
from thresher.errors import ThresherError


def tiny_recipe(**over) -> Recipe:
    base = dict(
        model="resnet10t",
        image_size=32,
        total_steps=12,
        warmup_steps=2,
        batch_size=8,
        grad_accum=2,
        workers=0,
        eval_every=6,
        checkpoint_every=3,
        log_every=1,
        lr=2e-3,
    )
    return Recipe(**{**base, **over})


def write_recipe(path: Path, **over) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(tiny_recipe(**over).model_dump(mode="json")))
    return path


# -- balance ---------------------------------------------------------------------------------------


def test_oversampling_meets_the_weights_and_shards_evenly():
    w = np.array([1.0, 1.0, 3.0, 0.5, 2.4])
    counts = sum(np.bincount(epoch_indices(w, e, seed=1), minlength=5) for e in range(2000))
    assert np.allclose(counts / 2000, w, atol=0.05)
    a, b = (epoch_indices(w, 7, 1, rank=k, world=2) for k in (0, 1))
    assert len(a) == len(b)  # every DDP rank runs the same number of steps
    assert (epoch_indices(w, 7, 1) == epoch_indices(w, 7, 1)).all()
    assert (epoch_indices(w, 7, 1) != epoch_indices(w, 8, 1)).any()  # reshuffled per epoch


def test_sampler_resumes_mid_epoch_with_the_same_draws_and_seeds():
    s = BalancedSampler(np.array([1.0, 2.0, 0.5, 1.0] * 10), seed=3)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=13)
    assert list(s) == full[13:]
    assert len({seed for _, seed in full}) == len(full)  # one augmentation seed per draw


def test_minority_cutmix_pastes_minority_patches_and_mixes_targets_by_area():
    k = 3
    images = torch.stack([torch.full((3, 16, 16), float(i)) for i in range(6)])
    targets = torch.tensor([0, 0, 0, 1, 2, 0])
    minority = torch.from_numpy(minority_classes(np.array([100, 10, 50]), below=0.5))
    assert minority.tolist() == [False, True, False]
    soft = smooth_one_hot(targets, k, 0.15)
    assert torch.allclose(soft.sum(1), torch.ones(6))
    x, y = minority_cutmix(images, soft, targets, minority, 1.0, 1.0, np.random.default_rng(5))
    assert torch.equal(x[3], images[3])  # the minority image itself is untouched
    for i in (0, 1, 2, 4, 5):
        pasted = (x[i] == 3.0).float().mean().item()  # pixels that came from image 3
        assert pasted > 0
        want = (1 - pasted) * soft[i] + pasted * soft[3]
        assert torch.allclose(y[i], want, atol=1e-6)
    assert torch.allclose(y.sum(1), torch.ones(6), atol=1e-6)  # smoothing and mixing combine
    no_min = torch.tensor([0, 2, 0, 2, 0, 0])
    x2, y2 = minority_cutmix(images, soft, no_min, minority, 1.0, 1.0, np.random.default_rng(5))
    assert x2 is images and y2 is soft


# -- recipe, manifest, model, schedule -------------------------------------------------------------


def test_recipe_defaults_are_the_reported_recipe():
    r = Recipe()
    assert (r.optimizer, r.lr, r.warmup_steps, r.total_steps) == ("lion", 5e-4, 500, 50_000)
    assert (r.betas[0], r.weight_decay_backbone, r.weight_decay_head) == (0.9, 1e-4, 1e-3)
    assert (r.label_smoothing, r.drop_rate, r.drop_path_rate) == (0.15, 0.5, 0.2)
    assert (r.crop_scale, r.rotation, r.color_jitter) == ((0.5, 1.0), 30.0, 0.2)
    assert (r.grad_accum, r.amp, r.grad_checkpointing, r.freeze_last_fraction) == (
        4,
        "fp16",
        True,
        0.1,
    )


def test_a_bad_recipe_is_one_line_naming_the_key(tmp_path, tiny_data):
    (tmp_path / "r.yaml").write_text("model: resnet10t\nlearning_rate: 0.1\nbatch_size: -2\n")
    r = subprocess.run(
        [sys.executable, "-m", "thresher.cli", "train", tmp_path / "r.yaml", "--data", tiny_data],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert 'unknown key "learning_rate"' in r.stderr and "batch_size" in r.stderr


def test_amp_off_in_yaml_reads_as_off(tmp_path):
    from thresher.config import load_yaml

    (tmp_path / "r.yaml").write_text("amp: off\n")  # YAML reads a bare off as false
    assert load_yaml(tmp_path / "r.yaml", Recipe).amp == "off"
    (tmp_path / "r.yaml").write_text("amp: true\n")
    with pytest.raises(ThresherError, match="amp"):
        load_yaml(tmp_path / "r.yaml", Recipe)


_ENTRY = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    if sys.argv[0] == "cli":
        from thresher.cli import main
        sys.argv[0] = "thresher"
        main()
    else:
        runpy.run_module("thresher.train", run_name="__main__")
except SystemExit as e:
    print("exit", e.code, "torch" in sys.modules, "thresher.cli" in sys.modules)
"""


def test_a_bad_recipe_is_refused_before_torch_is_imported(tmp_path, tiny_data):
    bad = tmp_path / "r.yaml"
    bad.write_text("model: resnet10t\nlearning_rate: 0.1\n")
    for entry in (["cli", "train"], ["cli", "ddp-check"], ["torchrun-entry"]):
        cmd = [sys.executable, "-c", _ENTRY, *entry, str(bad), "--data", str(tiny_data)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert 'unknown key "learning_rate"' in r.stderr, (entry, r.stderr)
        assert "Traceback" not in r.stderr
        exit_line = r.stdout.strip().splitlines()[-1]
        assert exit_line.startswith("exit 2 False"), (entry, r.stdout)  # torch never loaded
        if entry == ["torchrun-entry"]:
            assert exit_line == "exit 2 False False"  # train's entry does not import the CLI


def test_a_manifest_whose_weights_are_all_zero_is_refused_up_front(tiny_data, tmp_path):
    import pyarrow.parquet as pq

    from thresher.train.loop import train

    t = pq.read_table(tiny_data / "manifest.parquet").to_pydict()
    t["weight"] = [0.0] * len(t["weight"])
    (tmp_path / "zero").mkdir()
    import pyarrow as pa

    pq.write_table(pa.table(t), tmp_path / "zero" / "manifest.parquet")
    with pytest.raises(ThresherError, match="weight 0"):
        train(tiny_recipe(), tmp_path / "zero", tmp_path / "run", progress=False, log=print)
    with pytest.raises(ThresherError, match="no full batch"):  # weights that draw too few
        t["weight"] = [0.01] * len(t["weight"])
        pq.write_table(pa.table(t), tmp_path / "zero" / "manifest.parquet")
        train(tiny_recipe(), tmp_path / "zero", tmp_path / "run2", progress=False, log=print)


def test_the_label_error_share_comes_with_the_export_not_the_catalog(tmp_path):
    from thresher.train.setup import label_error_share

    (tmp_path / "export.json").write_text('{"label_error_share": 0.4, "workspace": "/gone"}')
    assert label_error_share(tmp_path) == 0.4
    assert label_error_share(tmp_path / "manifest.parquet") == 0.4
    (tmp_path / "other").mkdir()
    assert label_error_share(tmp_path / "other") is None  # no export beside it: unknown


def test_the_report_draws_class_names_with_dollar_signs(tmp_path):
    from thresher.train import metrics
    from thresher.train.report import run_report

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"classes": ["cost_$5_to_$10", "cost_$10_to_$20"]}, run / "checkpoint.pt")
    metrics.append(run / "metrics.jsonl", {"kind": "train", "step": 1, "loss": 1.0, "lr": 0.1,
                                           "images_per_s": 9.0, "images": 64,
                                           "seconds": 2.0})  # fmt: skip
    metrics.append(run / "metrics.jsonl", {"kind": "eval", "step": 1, "accuracy": 0.5,
                                           "loss": 1.0, "per_class_accuracy": [0.5, 0.5],
                                           "confusion": [[1, 1], [1, 1]]})  # fmt: skip
    html = run_report(run).read_text()
    assert "cost_$5_to_$10" in html and "32 images/s over the run" in html


def test_manifest_is_flat_arrays_not_python_objects(tiny_data):
    m = load_manifest(tiny_data)
    assert m.paths.dtype.kind == "S" and m.targets.dtype == np.int64
    assert m.classes == ("blue", "gold", "green", "red") and m.is_val.sum() == 16
    with pytest.raises(ThresherError, match="thresher export"):
        load_manifest(tiny_data / "nope")


def test_param_groups_and_the_frozen_lowest_layers():
    import timm

    from thresher.train.model import freeze, lowest_layers, param_groups

    model = timm.create_model("resnet10t", num_classes=4)
    groups = {g["name"]: g for g in param_groups(model, 1e-4, 1e-3)}
    assert groups["head"]["weight_decay"] == 1e-3 and groups["backbone"]["weight_decay"] == 1e-4
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim <= 1 for p in groups["no_decay"]["params"])
    assert model.fc.weight in groups["head"]["params"]
    total = sum(len(g["params"]) for g in groups.values())
    assert total == len(list(model.parameters()))
    names = lowest_layers(model, 2)
    assert any(n.startswith("conv1") for n in names) and any(n.startswith("layer1") for n in names)
    assert not any(n.startswith(("layer2", "fc")) for n in names)
    assert freeze(model, names) == len(names)
    assert not model.conv1[0].weight.requires_grad and model.layer2[0].conv1.weight.requires_grad


def test_schedule_warms_up_then_cosine_decays_in_optimizer_steps():
    from thresher.train.optim import optimizer, scheduler

    r = Recipe(lr=1e-3, min_lr=1e-5, warmup_steps=10, total_steps=110)
    opt = optimizer(r, [{"params": [torch.nn.Parameter(torch.zeros(2))]}])
    sched = scheduler(opt, r)

    def lr(step):
        sched.step_update(step)
        return opt.param_groups[0]["lr"]

    assert lr(0) == pytest.approx(1e-6)
    assert lr(5) < lr(9) < lr(10) == pytest.approx(1e-3, rel=0.02)
    assert lr(60) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5, rel=0.01)  # half-way down
    assert lr(110) == pytest.approx(1e-5, rel=0.01)


def test_user_transforms_and_local_weights(tmp_path):
    import timm
    from PIL import Image as PILImage

    from thresher.data.transforms import train_transform
    from thresher.loading import load_object
    from thresher.train.model import create_model

    tf = train_transform(Recipe(image_size=32, user_transform="PIL.ImageOps:autocontrast"))
    x = tf(PILImage.new("RGB", (50, 40), (90, 100, 110)))
    assert tuple(x.shape) == (3, 32, 32)
    with pytest.raises(ThresherError, match="user_transform 'PIL.ImageOps:no_such_th"):
        train_transform(Recipe(image_size=32, user_transform="PIL.ImageOps:no_such_thing"))
    with pytest.raises(ThresherError, match="user_transform must be 'module:callable'"):
        train_transform(Recipe(image_size=32, user_transform="autocontrast"))
    with pytest.raises(ThresherError, match="thermal_sensor 'PIL.Image:MAX_IMAGE_PIXELS' is not"):
        load_object("PIL.Image:MAX_IMAGE_PIXELS", "thermal_sensor")
    # A local state dict with another head: the backbone loads, the classifier stays fresh.
    donor = timm.create_model("resnet10t", num_classes=7)
    torch.save(donor.state_dict(), tmp_path / "w.pth")
    r = Recipe(model="resnet10t", pretrained=tmp_path / "w.pth", grad_checkpointing=False)
    notes: list[str] = []
    model = create_model(r, 4, notes.append)
    assert torch.equal(model.conv1[0].weight, donor.conv1[0].weight)
    assert model.fc.weight.shape[0] == 4
    assert any("fresh: fc.weight, fc.bias" in n for n in notes)
    assert not model.fc.weight.any()  # the fresh head starts at zero (issue #17)
    with pytest.raises(ThresherError, match="unknown timm model"):
        create_model(Recipe(model="resnet_does_not_exist"), 4)


# -- the loop --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_writes_metrics_checkpoints_and_a_report(tiny_data, tmp_path):
    from thresher.train.loop import train

    r = tiny_recipe(cutmix="minority", cutmix_prob=1.0)
    s = train(r, tiny_data, tmp_path / "run", progress=False, log=lambda m: None)
    assert s.steps == 12 and not s.interrupted
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_recs = [x for x in recs if x["kind"] == "train"]
    evals = [x for x in recs if x["kind"] == "eval"]
    assert [x["step"] for x in train_recs] == list(range(1, 13))
    assert [x["step"] for x in evals] == [6, 12]
    assert np.array(evals[-1]["confusion"]).sum() == 16
    assert any(x["kind"] == "event" and x["event"] == "freeze" for x in recs)  # last 10%
    # lr follows the schedule: warm-up to the peak, then down.
    lrs = [x["lr"] for x in train_recs]
    assert lrs[1] == pytest.approx(2e-3, rel=0.05) and lrs[-1] < lrs[1]
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 12 and ck["classes"] == ["blue", "gold", "green", "red"]
    # Steps count optimizer steps: 12 x accumulation 2 x batch 8 samples were drawn.
    m = load_manifest(tiny_data)
    w = m.weights[~m.is_val]
    full_epochs = sum(len(epoch_indices(w, e, seed=0)) // 8 * 8 for e in range(ck["epoch"]))
    assert full_epochs + ck["position"] == 12 * 2 * 8
    # Each log line: the accuracy of its batches, the machine's figures (no GPU ones on a
    # CPU), and the wall clock.
    assert all(0 <= x["train_accuracy"] <= 1 for x in train_recs)
    assert all(x["rss_mb"] > 10 and 0 <= x["cpu_percent"] <= 100 for x in train_recs)
    assert not any("gpu_util_percent" in x or "gpu_allocated_mb" in x for x in train_recs)
    walls = [x["wall"] for x in recs]
    assert walls == sorted(walls) and walls[-1] - walls[0] <= s.seconds + 60
    html = (tmp_path / "run" / "report.html").read_text()
    for part in ("Curves", "Per-class accuracy", "Confusion matrix", "Events", "Recipe", "freeze"):
        assert part in html
    assert html.count("data:image/png;base64") >= 4
    assert 'alt="accuracy by step: train, validation; 1 event marked"' in html
    assert 'alt="memory (RSS) by time: process RSS, workers RSS' in html
    assert "<th>wall-clock duration</th>" in html and "<th>last train accuracy</th>" in html
    with pytest.raises(ThresherError, match="--resume"):
        train(r, tiny_data, tmp_path / "run", progress=False, log=lambda m: None)


@pytest.mark.slow
def test_the_model_learns_the_easy_set(tiny_data, tmp_path):
    from thresher.train.loop import train

    r = tiny_recipe(total_steps=30, eval_every=30, checkpoint_every=30, cutmix="off")
    s = train(r, tiny_data, tmp_path / "run", progress=False, log=lambda m: None)
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in recs if x["kind"] == "train"]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3])
    assert s.val_accuracy >= 0.75  # chance is 0.25


def _cli_train(recipe: Path, data: Path, out: Path, *extra):
    return [
        sys.executable,
        "-m",
        "thresher.cli",
        "train",
        str(recipe),
        "--data",
        str(data),
        "--out",
        str(out),
        "-q",
        *extra,
    ]


def _wait_for_checkpoint(path: Path, step: int, proc, timeout=180) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert proc.poll() is None, "the run ended before it was stopped"
        if path.exists():
            try:
                if torch.load(path, weights_only=True)["step"] >= step:
                    return
            except Exception:  # caught between write and rename: not possible, but be kind
                pass
        time.sleep(0.1)
    raise AssertionError("no checkpoint in time")


@pytest.mark.slow
def test_a_killed_and_resumed_run_ends_with_the_same_weights(tiny_data, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", total_steps=16, workers=2, checkpoint_every=4)
    a, b = tmp_path / "a", tmp_path / "b"
    subprocess.run(_cli_train(recipe, tiny_data, a), check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(
        _cli_train(recipe, tiny_data, b), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_for_checkpoint(b / "checkpoint.pt", 4, proc)
    time.sleep(0.5)  # let it run into the next steps, then kill it mid-flight
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stopped_at = torch.load(b / "checkpoint.pt", weights_only=True)["step"]
    assert stopped_at < 16
    r = subprocess.run(
        _cli_train(recipe, tiny_data, b, "--resume"), capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    assert f"resumed {b} at step {stopped_at}" in r.stderr
    wa = torch.load(a / "checkpoint.pt", weights_only=True)
    wb = torch.load(b / "checkpoint.pt", weights_only=True)
    assert wa["step"] == wb["step"] == 16
    for k in wa["model"]:
        assert torch.equal(wa["model"][k], wb["model"][k]), k
    # The metrics file of the resumed run has each step once.
    steps = [
        json.loads(x)["step"]
        for x in (b / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["kind"] == "train"
    ]
    assert steps == list(range(1, 17))


@pytest.mark.slow
def test_ctrl_c_stops_at_a_step_boundary_with_a_checkpoint(tiny_data, tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml", total_steps=400, checkpoint_every=1000, eval_every=1000
    )
    proc = subprocess.Popen(
        _cli_train(recipe, tiny_data, tmp_path / "run"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics_file = tmp_path / "run" / "metrics.jsonl"
    t0 = time.monotonic()
    while not (metrics_file.exists() and metrics_file.read_text().count("\n") >= 3):
        assert time.monotonic() - t0 < 180 and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert 3 <= ck["step"] < 400
    assert f"stopped at step {ck['step']}" in stdout and "--resume" in stdout


@pytest.mark.slow
def test_sigterm_to_the_group_stops_at_a_checkpoint_and_the_run_resumes(tiny_data, tmp_path):
    # What `timeout`, Slurm and a terminal's Ctrl-C do: signal the whole process group, the
    # DataLoader workers included. The workers ignore it; the main process says so once,
    # checkpoints and exits 143 (SIGTERM) or 130 (SIGINT); --resume goes on from there.
    recipe = write_recipe(tmp_path / "r.yaml", total_steps=400, workers=2,
                          checkpoint_every=1000, eval_every=1000)  # fmt: skip
    run = tmp_path / "run"

    def start_and_signal(sig, *extra, after: int):
        cmd = _cli_train(recipe, tiny_data, run, *extra)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # fmt: skip
        try:
            t0 = time.monotonic()
            while (
                not (run / "metrics.jsonl").exists()
                or sum('"train"' in x for x in (run / "metrics.jsonl").read_text().splitlines())
                < after
            ):
                assert time.monotonic() - t0 < 180 and proc.poll() is None, proc.stderr.read()
                time.sleep(0.1)
            os.killpg(proc.pid, sig)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        return proc.returncode, stdout, stderr

    code, stdout, stderr = start_and_signal(signal.SIGTERM, after=3)
    assert code == 143, stderr
    assert stderr.count("stopping after this step") == 1, stderr  # not once per worker
    assert "Traceback" not in stderr
    first = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    assert 3 <= first < 400 and "--resume" in stdout
    code, stdout, stderr = start_and_signal(signal.SIGINT, "--resume", after=first + 3)
    assert code == 130, stderr
    assert stderr.count("stopping after this step") == 1 and "Traceback" not in stderr
    second = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    assert first < second < 400
    events = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    events = [(e["event"], e["step"]) for e in events if e["kind"] == "event"]
    assert events == [("interrupt", first), ("resume", first), ("interrupt", second)], events
    html = (run / "report.html").read_text()
    assert "SIGTERM" in html and "SIGINT" in html and "resumed" in html


@pytest.mark.slow
def test_the_weights_do_not_depend_on_the_worker_count(tiny_data, tmp_path):
    # Augmentation draws from per-sample seeds, in a worker or (workers=0) in the training
    # process itself, which then gets its own RNG streams back: dropout sees the same draws.
    from thresher.train.loop import train

    runs = {}
    for workers in (0, 2):
        r = tiny_recipe(total_steps=3, workers=workers, eval_every=100, checkpoint_every=3)
        train(r, tiny_data, tmp_path / f"w{workers}", progress=False, log=lambda m: None)
        runs[workers] = torch.load(tmp_path / f"w{workers}/checkpoint.pt", weights_only=True)
    a, b = runs[0]["model"], runs[2]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
