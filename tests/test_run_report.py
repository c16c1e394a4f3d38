"""The run report and `thresher report`: curves (train and validation), the machine's figures,
wall-clock time, events on the curves, and several runs compared on one page."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from thresher.errors import ThresherError
from thresher.train import metrics
from thresher.train.report import (
    _draw,
    _panels,
    load_run,
    recipe_differences,
    run_report,
)

START = 1_790_000_000.0  # a fixed clock: 2026-09-21


def fake_run(folder: Path, lr: float = 2e-3, gpu: bool = False, memory_guard: bool = True):
    """A run folder as `thresher train` leaves it (metrics.jsonl, recipe.yaml, summary.json),
    written by hand: 30 steps logged every 2, evaluations at 10, 20, 30, one event."""
    folder.mkdir(parents=True)
    for step in range(2, 31, 2):
        line = {
            "kind": "train",
            "step": step,
            "loss": 1.5 - step / 30,
            "lr": lr,
            "images_per_s": 50.0 + step,
            "train_accuracy": 0.3 + step / 50,
            "time": 4.0 * step,
            "images": 16 * step,
            "seconds": 4.0 * step,
            "cpu_percent": 80.0,
            "process_cpu_percent": 95.0,
            "rss_mb": 900.0 + step,
            "workers_rss_mb": 1000.0,
            "wall": START + 4.0 * step,
        }
        if gpu:
            line |= {"gpu_util_percent": 97.0, "gpu_memory_mb": 30000.0, "gpu_allocated_mb": 2e4}
        metrics.append(folder / metrics.FILE, line)
        if step % 10 == 0:
            metrics.append(folder / metrics.FILE, {
                "kind": "eval", "step": step, "accuracy": 0.5 + step / 100, "loss": 1.0,
                "train_accuracy": 0.3 + step / 50, "per_class_accuracy": [0.5, 0.7],
                "confusion": [[2, 2], [1, 3]], "wall": START + 4.0 * step + 1,
            })  # fmt: skip
        if step == 16:
            metrics.append(folder / metrics.FILE, {
                "kind": "event", "step": 16, "event": "numeric_rollback",
                "message": "loss spiked: rolled back to step 10", "wall": START + 66.0,
            })  # fmt: skip
    recipe = {"model": "resnet10t", "lr": lr, "total_steps": 30, "betas": [0.9, 0.99],
              "guards": {"enabled": True, "memory": memory_guard}}  # fmt: skip
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (folder / "summary.json").write_text('{"steps": 30, "interrupted": false}')
    return folder


def test_the_report_draws_train_accuracy_system_figures_and_the_clock(tmp_path):
    run = load_run(fake_run(tmp_path / "a", gpu=True))
    panels = {title: series for title, _, series in _panels([run])}
    acc = {s.label: s for s in panels["accuracy"]}
    assert set(acc) == {"train", "validation"}
    assert acc["train"].y.tolist() == pytest.approx([0.3 + s / 50 for s in range(2, 31, 2)])
    assert acc["validation"].step.tolist() == [10, 20, 30]
    assert {s.label for s in panels["loss"]} == {"train", "validation"}
    for title in ("learning rate", "images/s", "CPU use", "memory (RSS)", "GPU use", "GPU memory"):
        assert panels[title], title
    assert {s.label for s in panels["memory (RSS)"]} == {"process RSS", "workers RSS"}
    # The time axis is the wall clock since the loop started (the first line's clock less
    # its loop seconds), not the step.
    assert run.start == START
    assert acc["train"].time.tolist() == pytest.approx([4.0 * s for s in range(2, 31, 2)])
    assert acc["validation"].time.tolist() == pytest.approx([41, 81, 121])

    html = run_report(run.path).read_text()
    for alt in (
        'alt="accuracy by step: train, validation; 1 event marked"',
        'alt="accuracy by time: train, validation; 1 event marked"',
        'alt="GPU use by step: GPU use; 1 event marked"',
        'alt="memory (RSS) by time: process RSS, workers RSS; 1 event marked"',
        'alt="CPU use by step: machine (100 = all cores), training process (100 = one core)',
    ):
        assert alt in html, alt
    for row in ("started", "ended (last line)", "wall-clock duration", "last train accuracy",
                "peak RSS (process)", "mean GPU use", "peak GPU memory (card)"):  # fmt: skip
        assert f"<th>{row}</th>" in html, row
    assert "<td>2 min 01 s</td>" in html  # the clock: from the loop's start to the last line
    assert "loss spiked: rolled back to step 10" in html
    assert "http://" not in html and "https://" not in html  # one file, offline


def test_a_run_without_a_gpu_has_no_gpu_panel(tmp_path):
    run = load_run(fake_run(tmp_path / "cpu"))
    titles = [title for title, _, _ in _panels([run])]
    assert "GPU use" not in titles and "GPU memory" not in titles and "CPU use" in titles
    html = run_report(run.path).read_text()
    assert "mean GPU use" not in html and "peak RSS (process)" in html


def test_events_are_marked_on_the_curves_by_step_and_by_time(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = load_run(fake_run(tmp_path / "a"))
    title, ylabel, series = _panels([run])[0]
    for mode, x in (("step", 16.0), ("time", 66.0)):
        fig, ax = plt.subplots()
        _draw(ax, [run], title, ylabel, series, mode, 1.0, "seconds")
        vertical = [ln.get_xdata() for ln in ax.lines if ln.get_linestyle() == ":"]
        plt.close(fig)
        assert [list(v) for v in vertical] == [[x, x]], mode


def test_thresher_report_overlays_two_runs_and_diffs_their_recipes(tmp_path):
    a = fake_run(tmp_path / "a", lr=2e-3)
    b = fake_run(tmp_path / "b", lr=5e-4, memory_guard=False)
    assert recipe_differences([yaml.safe_load((p / "recipe.yaml").read_text()) for p in (a, b)]) \
        == {"guards.memory": [True, False], "lr": [2e-3, 5e-4]}  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-m", "thresher.cli", "report", str(a), str(b), "--out",
         str(tmp_path / "both.html")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "both.html").read_text()
    # One picture per panel holds both runs' curves, each in its colour, with a legend.
    assert (
        'alt="loss by step: a train, a validation, b train, b validation; 2 events marked"' in html
    )
    assert 'alt="accuracy by time: a train, a validation, b train, b validation' in html
    assert html.count("<th><span class=swatch") >= 2 * 3  # summary, per class, recipe diff
    diff = html[html.index("<h2>Recipes: the 2 keys that differ</h2>") :]
    diff = diff[: diff.index("</table>")]
    assert "<td>lr</td><td>0.002</td><td class=diff>0.0005</td>" in diff
    assert "<td>guards.memory</td><td>true</td><td class=diff>false</td>" in diff
    assert "model" not in diff and "betas" not in diff  # only the keys that differ
    assert "The other 4 keys are the same in every run" in html


def test_a_bad_run_folder_is_one_line(tmp_path):
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ThresherError, match="does not exist"):
        load_run(tmp_path / "missing")
    with pytest.raises(ThresherError, match="is a file, not a run folder"):
        load_run(tmp_path / "file.txt")
    with pytest.raises(ThresherError, match="is not a run folder: it has no metrics.jsonl"):
        load_run(tmp_path / "not-a-run")
    good = fake_run(tmp_path / "good")
    r = subprocess.run(
        [sys.executable, "-m", "thresher.cli", "report", str(good), str(tmp_path / "not-a-run")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [  # one line, nothing else
        f"error: {tmp_path / 'not-a-run'} is not a run folder: it has no metrics.jsonl (the "
        "--out folder of `thresher train` has one)"
    ], r.stderr
    assert not (tmp_path / "runs-compared.html").exists()


def test_system_figures_are_sampled_and_workers_counted():
    from thresher.train.system import SystemSampler

    def pids():
        return {c.pid for c in sampler._children}

    # pytest may have children of its own already: the test counts the one it starts.
    sampler = SystemSampler(None, children_every_s=3600)
    before = sampler.sample()
    assert before.rss_mb > 10 and before.workers_rss_mb >= 0 and before.gpu_util_percent is None
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)
        sampler.sample()
        assert child.pid not in pids()  # the list is cached: refreshed every children_every_s
        sampler._children_at = float("-inf")
        with_child = sampler.sample()
        assert child.pid in pids()
        assert with_child.workers_rss_mb > before.workers_rss_mb + 1  # a Python: several MB
    finally:
        child.kill()
        child.wait()
    # A worker that exited refreshes the list at once, whatever its age.
    after = sampler.sample()
    assert child.pid not in pids() and after.workers_rss_mb < with_child.workers_rss_mb
    rec = after.record()
    assert "gpu_util_percent" not in rec and {"cpu_percent", "rss_mb"} <= set(rec)
    assert all(isinstance(v, float) and np.isfinite(v) for v in rec.values())
