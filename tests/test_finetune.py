"""Fine-tuning a crawl from ImageNet weights (issue #17): the loader, the fresh head, the fit."""

from __future__ import annotations

import json
import math

import pytest
import torch

from thresher.config import Recipe
from thresher.errors import ThresherError


def test_torchvision_weights_load_into_timm_by_position_with_a_fresh_zero_head(mobilenet_weights):
    from thresher.train.model import create_model

    r = Recipe(model="mobilenetv2_100", pretrained=mobilenet_weights, grad_checkpointing=False)
    notes: list[str] = []
    model = create_model(r, 8, notes.append)
    theirs = list(torch.load(mobilenet_weights, map_location="cpu", weights_only=True).values())
    own = model.state_dict()
    head = {"classifier.weight", "classifier.bias"}
    backbone = [(k, v) for k, v in own.items() if k not in head]
    assert len(backbone) == len(theirs) - 2  # torchvision's classifier.1 weight and bias last
    for (k, v), t in zip(backbone, theirs, strict=False):
        assert torch.equal(v, t), k  # every backbone tensor, by value
    assert model.classifier.weight.shape == (8, 1280) and not model.classifier.weight.any()
    said = " ".join(notes)
    assert "by position" in said and "fresh: classifier.weight, classifier.bias" in said


def test_weights_of_another_architecture_are_refused_in_one_line(mobilenet_weights):
    from thresher.train.model import create_model
    from thresher.weights import WeightsMismatch

    r = Recipe(model="resnet10t", pretrained=mobilenet_weights, grad_checkpointing=False)
    with pytest.raises(WeightsMismatch, match=r"does not fit ResNet: .*conv1") as e:
        create_model(r, 8, lambda m: None)
    assert "\n" not in str(e.value)
    with pytest.raises(ThresherError, match="not found"):
        create_model(Recipe(model="resnet10t", pretrained="/nope.pth"), 8)


def test_the_head_takes_its_own_learning_rate_through_the_schedule():
    import timm

    from thresher.train.model import param_groups
    from thresher.train.optim import optimizer, scheduler

    model = timm.create_model("resnet10t", num_classes=4)
    r = Recipe(model="resnet10t", lr=1e-4, head_lr=1e-3, warmup_steps=0, total_steps=10)
    opt = optimizer(r, param_groups(model, 0.0, 0.0, r.head_lr / r.lr))
    scheduler(opt, r).step_update(0)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["head"] == pytest.approx(1e-3) and lrs["head_bias"] == pytest.approx(1e-3)
    assert lrs["backbone"] == pytest.approx(1e-4) and lrs["no_decay"] == pytest.approx(1e-4)


def test_fit_recipe_sizes_the_run_to_the_data():
    from thresher.train.fit import fit_recipe

    r = Recipe(batch_size=32)
    f = fit_recipe(r, n_images=3000, n_classes=8, epochs=10)
    assert f.recipe.total_steps == 10 * math.ceil(3000 / 32) == 940
    assert f.recipe.warmup_steps == 47 and f.recipe.grad_accum == 1
    # Lion: 3x smaller lr and 3x larger weight decay than AdamW's at the same batch.
    adamw = fit_recipe(Recipe(batch_size=32, optimizer="adamw"), 3000, 8, 10).recipe
    assert f.recipe.lr == pytest.approx(adamw.lr / 3, rel=1e-2)
    assert f.recipe.weight_decay_backbone == pytest.approx(adamw.weight_decay_backbone * 3)
    assert f.recipe.head_lr == pytest.approx(10 * f.recipe.lr, rel=1e-2)
    assert f.recipe.min_lr < f.recipe.lr and f.recipe.eval_every == 94
    assert r.total_steps == 50_000  # the input recipe is left as it was
    printed = "\n".join(f.lines())
    for c in f.choices:
        assert f"{c.field}: {c.value}" in printed
    assert fit_recipe(r, 100, 2, 1).recipe.total_steps == 4  # a tiny set still runs


def test_first_loss_of_a_fresh_head_on_pretrained_weights_is_near_chance(
    mobilenet_weights, tiny_data, tmp_path
):
    """A real run of a few steps: the first logged loss within 20% of ln(classes)."""
    from thresher.train.loop import train

    r = Recipe(
        model="mobilenetv2_100",
        pretrained=mobilenet_weights,
        image_size=64,
        batch_size=16,
        grad_accum=1,
        total_steps=3,
        warmup_steps=1,
        log_every=1,
        eval_every=3,
        checkpoint_every=3,
        workers=0,
        grad_checkpointing=False,
        amp="off",
    )
    said: list[str] = []
    train(r, tiny_data, tmp_path / "run", progress=False, log=said.append)
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = next(x["loss"] for x in recs if x["kind"] == "train")
    assert abs(first - math.log(4)) < 0.2 * math.log(4), first
    assert any("by position" in m and "fresh: classifier" in m for m in said)


@pytest.mark.slow
def test_cli_fit_to_data_prints_every_choice_and_writes_it_to_the_runs_recipe(tiny_data, tmp_path):
    import subprocess
    import sys

    import yaml

    (tmp_path / "r.yaml").write_text(
        "model: resnet10t\nimage_size: 32\nbatch_size: 8\nworkers: 0\ngrad_checkpointing: false\n"
    )
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "thresher.cli", "train", str(tmp_path / "r.yaml"), "--data"]
    p = subprocess.run(
        cmd + [str(tiny_data), "--out", str(run), "--fit-to-data", "--epochs", "1", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert saved["total_steps"] == 11 and saved["grad_accum"] == 1  # 84 images / 8, 1 epoch
    for field in ("total_steps", "warmup_steps", "lr", "head_lr", "head_only_fraction"):
        assert f"  {field}: {saved[field]}" in p.stderr, field
    metrics = (run / "metrics.jsonl").read_text()
    assert '"step": 11' in metrics


def test_head_only_fraction_outside_zero_to_a_half_is_one_clear_line(tmp_path):
    from pydantic import ValidationError

    from thresher.config import load_yaml

    short = dict(total_steps=10, warmup_steps=1)
    assert Recipe(head_only_fraction=0.5, **short).head_only_steps == 5
    assert Recipe(head_only_fraction=0.25, **short).head_only_steps == 3  # rounded up
    for bad in (0.7, -0.1):
        with pytest.raises(ValidationError, match=r"head_only_fraction .*must be in \[0, 0.5\]"):
            Recipe(head_only_fraction=bad)
    (tmp_path / "r.yaml").write_text("head_only_fraction: 0.8\n")
    with pytest.raises(ThresherError, match=r"head_only_fraction 0.8: .*\[0, 0.5\]") as e:
        load_yaml(tmp_path / "r.yaml", Recipe)
    assert "\n" not in str(e.value)


def _lp_ft_recipe(**over) -> Recipe:
    base = dict(
        model="resnet10t", image_size=32, batch_size=8, grad_accum=2, total_steps=6,
        warmup_steps=1, head_only_fraction=0.5, lr=2e-3, head_lr=1e-2, workers=0,
        eval_every=6, checkpoint_every=1, log_every=1, amp="off", grad_checkpointing=False,
    )  # fmt: skip
    return Recipe(**{**base, **over})


@pytest.fixture
def every_checkpoint(monkeypatch):
    """Each checkpoint.pt the loop writes is also kept as step<N>.pt beside it (real files)."""
    from thresher.train import checkpoint

    save = checkpoint.save

    def keep(path, state):
        save(path, state)
        if path.name == checkpoint.LATEST:
            save(path.with_name(f"step{state['step']}.pt"), state)

    monkeypatch.setattr(checkpoint, "save", keep)


def test_the_head_trains_alone_first_then_the_whole_network(tiny_data, tmp_path, every_checkpoint):
    """head_only_fraction 0.5 of 6 steps: steps 1-3 move the head alone, 4-6 everything."""
    from thresher.train.distributed import seed_model
    from thresher.train.loop import train
    from thresher.train.model import create_model

    r = _lp_ft_recipe()
    run = tmp_path / "run"
    train(r, tiny_data, run, progress=False, log=lambda m: None)
    seed_model(r.seed, 0)  # the run's initial weights, as setup builds them
    start = create_model(r, 4, lambda m: None).state_dict()
    ck = {s: torch.load(run / f"step{s}.pt", weights_only=True)["model"] for s in (1, 3, 6)}
    head = {"fc.weight", "fc.bias"}
    backbone = [k for k in start if k not in head and "num_batches_tracked" not in k]
    assert any("running_mean" in k for k in backbone)  # batch-norm statistics are checked too
    for k in backbone:  # fixed weights, and ImageNet-style statistics left as they were
        assert torch.equal(ck[3][k], start[k]), k
    for k in head:
        assert not torch.equal(ck[1][k], start[k]) and not torch.equal(ck[3][k], ck[1][k]), k
        assert not torch.equal(ck[6][k], ck[3][k]), k
    moved = [k for k in backbone if not torch.equal(ck[6][k], ck[3][k])]
    assert len(moved) == len(backbone)  # after the phase every tensor trains
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    phases = [(x["step"], x["message"]) for x in recs if x.get("event") == "head_only"]
    assert phases[0][0] == 0 and "head alone trains until step 3" in phases[0][1]
    assert phases[1][0] == 3 and "whole network" in phases[1][1]
    assert not [x for x in recs if x.get("event", "").startswith("numeric")]


def test_a_run_resumed_inside_the_head_phase_ends_with_the_same_weights(
    tiny_data, tmp_path, every_checkpoint
):
    """Resumed at step 2, it crosses the phase boundary at 3 as the uninterrupted run did."""
    import shutil

    from thresher.train.loop import train

    r = _lp_ft_recipe()
    a, b = tmp_path / "a", tmp_path / "b"
    train(r, tiny_data, a, progress=False, log=lambda m: None)
    b.mkdir()
    shutil.copy(a / "step2.pt", b / "checkpoint.pt")
    said: list[str] = []
    train(r, tiny_data, b, resume=True, progress=False, log=said.append)
    assert any("resumed" in m and "at step 2" in m for m in said)
    wa = torch.load(a / "checkpoint.pt", weights_only=True)
    wb = torch.load(b / "checkpoint.pt", weights_only=True)
    assert wa["step"] == wb["step"] == 6
    for k in wa["model"]:
        assert torch.equal(wa["model"][k], wb["model"][k]), k
