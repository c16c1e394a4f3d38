"""The run report: one self-contained HTML page for a run, or one page comparing runs.

What it shows, after TensorBoard's scalars and W&B's system panel: loss and accuracy, train
and validation; the learning rate; images/s; the machine (CPU use, the process's and its
DataLoader workers' memory, and GPU use and memory when there was a GPU); when the run
started and ended and how long it took; every event, listed and marked on the curves (dotted
lines); per-class accuracy, the confusion matrix and the recipe. The x axis is the step, or
the wall-clock time since the start (a switch at the top of the curves: plain CSS, the page
has no script and opens offline).

Several runs (`thresher report A B`): the curves overlaid, one colour per run with a legend,
the summaries in one table, and the recipes diffed (only the keys that differ, highlighted).
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np

from thresher.errors import ThresherError
from thresher.files import atomic_write, readable_name
from thresher.train import metrics

REPORT = "report.html"
# One colour per run (matplotlib's tab10), the same in every panel and table.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip


@dataclass
class Run:
    """A run folder as the report reads it: its metrics lines, recipe and summary."""

    path: Path
    name: str
    train: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    recipe: dict = field(default_factory=dict)
    recipe_text: str = ""
    summary: dict = field(default_factory=dict)  # summary.json; {} while the run goes on
    classes: list[str] = field(default_factory=list)
    start: float | None = None  # Unix time the loop started
    end: float | None = None  # Unix time of the last line

    def elapsed(self, records: list[dict]) -> np.ndarray:
        """Wall-clock seconds since the start for each record (by step where it has no clock:
        a run written before lines carried one)."""
        steps = np.array([r["step"] for r in records], dtype=float)
        if self.start is not None:
            t = np.array([r.get("wall", np.nan) for r in records], dtype=float) - self.start
        else:
            t = np.full(len(records), np.nan)
        miss = np.isnan(t)
        if miss.any() and self.train:
            # the loop's own seconds (every session together) where there is no clock
            ts = np.array([r["step"] for r in self.train], dtype=float)
            own = np.array([r.get("seconds", r.get("time", 0.0)) for r in self.train], float)
            t[miss] = np.interp(steps[miss], ts, own)
        return np.nan_to_num(t)


def load_run(path: Path | str, name: str | None = None) -> Run:
    """Read RUN's metrics.jsonl, recipe.yaml and summary.json; a folder that is not a run is
    one line naming it."""
    import yaml

    path = Path(path)
    if not path.is_dir():
        what = "is a file, not a run folder" if path.exists() else "does not exist"
        raise ThresherError(f"{path} {what}: give the --out folder of `thresher train`")
    if not (path / metrics.FILE).is_file():
        raise ThresherError(
            f"{path} is not a run folder: it has no {metrics.FILE} (the --out folder of "
            "`thresher train` has one)"
        )
    recs = metrics.read(path / metrics.FILE)
    run = Run(path, name or path.name)
    run.train = [r for r in recs if r.get("kind") == "train"]
    run.evals = [r for r in recs if r.get("kind") == "eval"]
    run.events = [r for r in recs if r.get("kind") == "event"]
    if (path / "recipe.yaml").is_file():
        run.recipe_text = (path / "recipe.yaml").read_text()
        try:
            run.recipe = yaml.safe_load(run.recipe_text) or {}
        except yaml.YAMLError:
            run.recipe = {}
    if (path / "summary.json").is_file():
        try:
            run.summary = json.loads((path / "summary.json").read_text())
        except json.JSONDecodeError:
            run.summary = {}
    walls = [r["wall"] for r in recs if "wall" in r]
    if walls:
        # the first line's clock less the loop seconds before it: when the loop started
        first = run.train[0] if run.train and "wall" in run.train[0] else None
        loop_start = first["wall"] - first.get("time", 0.0) if first else min(walls)
        run.start = min(min(walls), loop_start)
        run.end = max(walls)
    run.classes = _classes(path)
    return run


def run_report(run: Path | str, out: Path | str | None = None) -> Path:
    """Write RUN/report.html (or OUT) from RUN/metrics.jsonl, recipe.yaml and summary.json."""
    r = load_run(run)
    page = _page([r], f"thresher run report: {r.path}")
    return _write(Path(out) if out else r.path / REPORT, page)


def compare_report(runs: list[Path | str], out: Path | str) -> Path:
    """Write one page comparing RUNS: curves overlaid, summaries side by side, recipes diffed."""
    paths = [Path(p) for p in runs]
    names = [p.name for p in paths]
    if len(set(names)) < len(names):  # two runs called `run` in different folders
        names = [str(p) for p in paths]
    loaded = [load_run(p, n) for p, n in zip(paths, names, strict=True)]
    return _write(Path(out), _page(loaded, f"thresher: {len(loaded)} runs compared"))


def _write(out: Path, page: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    # Whole or not at all: the loop and `thresher report RUN` may both write RUN/report.html,
    # and a kill mid-write must not leave half a page.
    with atomic_write(out) as f:
        f.write(readable_name(page).encode())  # a non-UTF-8 folder name, as \xNN
    return out


# -- the page ---------------------------------------------------------------------------------


def _page(runs: list[Run], title: str) -> str:
    one = len(runs) == 1
    parts = [
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><style>",
        "body{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:1440px}",
        ".row{display:flex;flex-wrap:wrap;gap:10px}table{border-collapse:collapse}",
        "td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}",
        "pre{background:#f6f6f6;padding:10px;border-radius:6px}.muted{color:#777}",
        "td.diff{background:#ffe8a3}.swatch{display:inline-block;width:12px;height:12px;",
        "border-radius:2px;margin-right:5px;vertical-align:-1px}",
        ".by-time{display:none}#x-time:checked~.curves .by-step{display:none}",
        "#x-time:checked~.curves .by-time{display:flex}.switch label{margin-right:12px}",
        "</style>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if one:
        parts.append(f"<p>{_headline(runs[0])}</p>")
    parts.append("<h2>Summary</h2>" + _summary_table(runs))
    if any(r.train for r in runs):
        parts.append(_curves(runs))
    if one:
        parts.append(_classes_section(runs[0]))
    else:
        parts.append(_per_class_compared(runs))
    parts.append(_events_table(runs))
    if one:
        parts.append(f"<h2>Recipe</h2><pre>{html.escape(runs[0].recipe_text)}</pre>")
    else:
        parts.append(_recipe_diff(runs))
    return "\n".join(parts)


def _swatch(i: int) -> str:
    return f'<span class=swatch style="background:{COLOURS[i % len(COLOURS)]}"></span>'


def _when(t: float | None) -> str:
    """A Unix time as local date and time, with its zone."""
    if t is None:
        return ""
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d} d " if d else "") + (f"{h} h {m:02d} min" if d or h else f"{m} min {s:02d} s")


def _headline(r: Run) -> str:
    """One sentence: steps, loss, speed, accuracy, events (what the old report opened with)."""
    if not r.train:
        return f"{html.escape(str(r.path))}: no training line yet."
    t = r.train[-1]
    # The whole run's speed (every session of a resumed run), not the last window's.
    speed = t["images"] / t["seconds"] if t.get("seconds") else t["images_per_s"]
    last = r.evals[-1] if r.evals else None
    acc = (
        f"; validation accuracy {last['accuracy']:.4f} "
        f"(best {max(e['accuracy'] for e in r.evals):.4f})"
        if last
        else ""
    )
    n = len(r.events)
    return (
        f"{html.escape(str(r.path))}: {t['step']} optimizer steps, last loss {t['loss']:.4f}, "
        f"{speed:.0f} images/s over the run{acc}; {n} event{'' if n == 1 else 's'}."
    )


def summary_rows(r: Run) -> dict[str, str]:
    """The figures a person compares runs by, as text (one column of the summary table)."""
    t = r.train[-1] if r.train else {}
    s = r.summary
    evals = r.evals
    last_train_acc = next((x["train_accuracy"] for x in reversed(r.train)
                           if "train_accuracy" in x), None)  # fmt: skip
    if last_train_acc is None and evals:
        last_train_acc = evals[-1].get("train_accuracy")

    def peak(key: str, unit: str, fmt: str = ".0f") -> str:
        v = [x[key] for x in r.train if key in x]
        return f"{max(v):{fmt}} {unit}" if v else ""

    def mean(key: str, unit: str) -> str:
        v = [x[key] for x in r.train if key in x]
        return f"{np.mean(v):.0f} {unit}" if v else ""

    state = "done"
    if s.get("stopped_by"):
        state = f"stopped: {s['stopped_by']}"
    elif s.get("interrupted"):
        state = "interrupted (--resume goes on)"
    elif not s:
        state = "running, or ended without a summary"
    total = r.recipe.get("total_steps")
    rows = {
        "model": str(r.recipe.get("model", "")),
        "steps": f"{t.get('step', 0)}" + (f" of {total}" if total else ""),
        "state": state,
        "started": _when(r.start),
        "ended (last line)": _when(r.end),
        "wall-clock duration": _duration(None if r.start is None else r.end - r.start),
        "training time (loop)": _duration(t.get("seconds")),
        "images/s over the run": f"{t['images'] / t['seconds']:.1f}"
        if t.get("seconds") and "images" in t
        else "",
        "last train loss": f"{t['loss']:.4f}" if "loss" in t else "",
        "last train accuracy": "" if last_train_acc is None else f"{last_train_acc:.4f}",
        "last validation accuracy": f"{evals[-1]['accuracy']:.4f}" if evals else "",
        "best validation accuracy": f"{max(e['accuracy'] for e in evals):.4f}" if evals else "",
        "events": str(len(r.events)),
        "mean CPU use (machine)": mean("cpu_percent", "%"),
        "peak RSS (process)": peak("rss_mb", "MB"),
        "peak RSS (workers)": peak("workers_rss_mb", "MB"),
        "mean GPU use": mean("gpu_util_percent", "%"),
        "peak GPU memory (card)": peak("gpu_memory_mb", "MB"),
    }
    return rows


def _summary_table(runs: list[Run]) -> str:
    cols = [summary_rows(r) for r in runs]
    head = "".join(f"<th>{_swatch(i)}{html.escape(r.name)}</th>" for i, r in enumerate(runs))
    out = [f"<table><tr><th></th>{head}</tr>"]
    for key in cols[0]:
        values = [c[key] for c in cols]
        if not any(values):  # no GPU in any run: no GPU rows
            continue
        cells = "".join(f"<td>{html.escape(v)}</td>" for v in values)
        out.append(f"<tr><th>{html.escape(key)}</th>{cells}</tr>")
    out.append("</table>")
    return "".join(out)


# -- the curves -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    """One line of a panel: (x by step, x by time, y) and how it is drawn."""

    run: int
    label: str
    step: np.ndarray
    time: np.ndarray
    y: np.ndarray
    style: str = "-"  # "-" a line (smoothed when long and noisy), "o-" evaluations, "--" second


def _series(r: Run, i: int, records: list[dict], key: str, label: str, style="-") -> list[_Series]:
    rows = [x for x in records if x.get(key) is not None]
    if not rows:
        return []
    return [
        _Series(
            i,
            label,
            np.array([x["step"] for x in rows], dtype=float),
            r.elapsed(rows),
            np.array([x[key] for x in rows], dtype=float),
            style,
        )
    ]


class _Panel(NamedTuple):
    """One chart: its title, its y axis's label, and its lines (of every run)."""

    title: str
    ylabel: str
    series: list[_Series]


def _panels(runs: list[Run]) -> list[_Panel]:
    """Every panel some run has data for."""
    one = len(runs) == 1

    def name(r: Run, what: str) -> str:
        return what if one else f"{r.name} {what}"

    loss, acc, lr, speed, cpu, mem, gpu, gmem = ([] for _ in range(8))
    for i, r in enumerate(runs):
        loss += _series(r, i, r.train, "loss", name(r, "train"))
        loss += _series(r, i, r.evals, "loss", name(r, "validation"), "o-")
        window = _series(r, i, r.train, "train_accuracy", name(r, "train"))
        # a run from before the log line had it: train accuracy at each evaluation
        acc += window or _series(r, i, r.evals, "train_accuracy", name(r, "train"), "--")
        acc += _series(r, i, r.evals, "accuracy", name(r, "validation"), "o-")
        lr += _series(r, i, r.train, "lr", name(r, "learning rate"))
        speed += _series(r, i, r.train, "images_per_s", name(r, "images/s"))
        cpu += _series(r, i, r.train, "cpu_percent", name(r, "machine (100 = all cores)"))
        cpu += _series(r, i, r.train, "process_cpu_percent",
                       name(r, "training process (100 = one core)"), "--")  # fmt: skip
        mem += _series(r, i, r.train, "rss_mb", name(r, "process RSS"))
        mem += _series(r, i, r.train, "workers_rss_mb", name(r, "workers RSS"), "--")
        gpu += _series(r, i, r.train, "gpu_util_percent", name(r, "GPU use"))
        gmem += _series(r, i, r.train, "gpu_memory_mb", name(r, "card (NVML)"))
        gmem += _series(r, i, r.train, "gpu_allocated_mb", name(r, "tensors (torch)"), "--")
    panels = [
        _Panel("loss", "loss", loss),
        _Panel("accuracy", "accuracy", acc),
        _Panel("learning rate", "lr", lr),
        _Panel("images/s", "images/s", speed),
        _Panel("CPU use", "%", cpu),
        _Panel("memory (RSS)", "MB", mem),
        _Panel("GPU use", "%", gpu),
        _Panel("GPU memory", "MB", gmem),
    ]
    return [p for p in panels if p.series]


def _time_unit(runs: list[Run]) -> tuple[float, str]:
    longest = max((r.end - r.start for r in runs if r.start is not None), default=0.0)
    longest = max([longest] + [float(r.train[-1].get("seconds", 0)) for r in runs if r.train])
    if longest >= 3 * 3600:
        return 3600.0, "hours"
    if longest >= 180:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _ema(y: np.ndarray, weight: float = 0.6) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start."""
    out, last, norm = np.empty_like(y), 0.0, 0.0
    for k, v in enumerate(y):
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[k] = last / norm
    return out


def _curves(runs: list[Run]) -> str:
    panels = _panels(runs)
    unit, unit_name = _time_unit(runs)
    events = sum(len(r.events) for r in runs)
    by = {"step": [], "time": []}
    for mode in by:
        for title, ylabel, series in panels:
            # The alt text says what the picture draws (read by screen readers and the tests).
            alt = f"{title} by {mode}: {', '.join(s.label for s in series)}" + (
                f"; {events} event{'' if events == 1 else 's'} marked" if events else ""
            )
            by[mode].append(_figure(lambda ax, s=series, t=title, y=ylabel, m=mode:
                                    _draw(ax, runs, t, y, s, m, unit, unit_name),
                                    alt=alt))  # fmt: skip
    legend = ""
    if len(runs) > 1:
        legend = "<p>" + " ".join(f"{_swatch(i)}{html.escape(r.name)}"
                                  for i, r in enumerate(runs)) + "</p>"  # fmt: skip
    return (
        "<h2>Curves</h2><div class=switch>x axis: "
        "<input type=radio name=x id=x-step checked><label for=x-step>step</label>"
        "<input type=radio name=x id=x-time><label for=x-time>wall-clock time since the "
        f"start ({unit_name})</label>{legend}<div class=curves>"
        f'<div class="row by-step">{"".join(by["step"])}</div>'
        f'<div class="row by-time">{"".join(by["time"])}</div></div></div>'
        "<p class=muted>Dotted lines: events (see the table below). Train loss and accuracy "
        "are of the augmented batches since the previous line; a long noisy curve is drawn "
        "smoothed (an exponential moving average, as TensorBoard does) over its raw values, "
        "shown faint.</p>"
    )


def _draw(ax, runs, title, ylabel, series, mode, unit, unit_name) -> None:
    for s in series:
        colour = COLOURS[s.run % len(COLOURS)]
        x = s.step if mode == "step" else s.time / unit
        label = _plain_text(s.label)  # a run folder named `cost_$5` is not TeX
        if s.style == "o-":
            ax.plot(x, s.y, "o-", color=colour, markersize=4, label=label, alpha=0.9)
        elif len(s.y) > 20 and s.style == "-" and title in ("loss", "accuracy", "images/s"):
            ax.plot(x, s.y, "-", color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(x, _ema(s.y), "-", color=colour, label=label)
        else:
            ax.plot(x, s.y, s.style, color=colour, label=label)
    labelled = 0
    for i, r in enumerate(runs):
        if not r.events:
            continue
        xs = [e["step"] for e in r.events] if mode == "step" else r.elapsed(r.events) / unit
        for e, x in zip(r.events, xs, strict=True):
            ax.axvline(x, color=COLOURS[i % len(COLOURS)], linestyle=":", linewidth=1, alpha=0.7)
            if title == "loss" and labelled < 12:  # named on the first panel, not everywhere
                ax.annotate(_plain_text(e["event"]), (x, 1), xycoords=("data", "axes fraction"),
                            rotation=90, fontsize=7, va="top", ha="right",
                            color="#555")  # fmt: skip
                labelled += 1
    if title == "learning rate":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.set_xlabel("step" if mode == "step" else f"wall-clock time since the start ({unit_name})")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len({s.label for s in series}) > 1 or len(runs) > 1:
        ax.legend(fontsize=7)


def _figure(draw, w=4.5, h=3.0, alt: str = "", tight: bool = False) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(w, h), dpi=100)
    draw(ax)
    ax.grid(alpha=0.3)
    if tight:
        fig.tight_layout()
    else:  # fixed margins: tight_layout renders the figure twice (a third of a report's time)
        fig.subplots_adjust(left=0.16, right=0.97, bottom=0.16, top=0.9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


# -- classes, events, recipes ---------------------------------------------------------------


def _classes(path: Path) -> list[str]:
    """The class names the run trained on, from its checkpoint (memory-mapped: not read whole)."""
    from thresher.train.checkpoint import BEST, LATEST  # torch: imported only here

    for name in (LATEST, BEST):
        if (path / name).is_file():
            import torch

            try:
                return list(torch.load(path / name, map_location="cpu", weights_only=True,
                                       mmap=True)["classes"])  # fmt: skip
            except Exception:  # an unreadable checkpoint costs the names, not the report
                return []
    return []


def _classes_section(r: Run) -> str:
    if not r.evals:
        return ""
    last = r.evals[-1]
    names = r.classes or [str(i) for i in range(len(last["per_class_accuracy"]))]
    shown = [_plain_text(n) for n in names]  # matplotlib reads $...$ as TeX
    conf = np.array(last["confusion"])
    parts = [
        f"<h2>Per-class accuracy (step {last['step']})</h2><table>"
        "<tr><th>class</th><th>accuracy</th><th>validation images</th></tr>"
    ]
    for name, acc, n in zip(names, last["per_class_accuracy"], conf.sum(axis=1), strict=True):
        parts.append(f"<tr><td>{html.escape(name)}</td><td>{acc:.4f}</td><td>{n}</td></tr>")
    parts.append("</table><h2>Confusion matrix (rows: true, columns: predicted)</h2>")

    def confusion_plot(ax):
        norm = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ticks = range(len(names))
        ax.set_xticks(ticks, shown, rotation=90 if len(names) > 6 else 0)
        ax.set_yticks(ticks, shown)
        if len(names) <= 20:
            for i in ticks:
                for j in ticks:
                    ax.text(j, i, str(conf[i, j]), ha="center", va="center", fontsize=8)

    side = min(3 + 0.4 * len(names), 14)
    parts.append(_figure(confusion_plot, side, side, alt="confusion matrix", tight=True))
    return "".join(parts)


def _per_class_compared(runs: list[Run]) -> str:
    with_evals = [r for r in runs if r.evals]
    if not with_evals:
        return ""

    def names_of(r: Run) -> list[str]:  # without a checkpoint: the classes' numbers
        return r.classes or [str(i) for i in range(len(r.evals[-1]["per_class_accuracy"]))]

    names = names_of(with_evals[0])
    if any(names_of(r) != names for r in with_evals):
        return "<p class=muted>Per-class accuracy: not compared (the runs' classes differ).</p>"
    # A run's colour is its place among all runs (`thresher report a a` shows two runs).
    colour = {id(r): i for i, r in enumerate(runs)}
    head = "".join(f"<th>{_swatch(colour[id(r)])}{html.escape(r.name)}</th>" for r in with_evals)
    out = [f"<h2>Per-class accuracy (last evaluation)</h2><table><tr><th>class</th>{head}</tr>"]
    for k, name in enumerate(names):
        cells = "".join(f"<td>{r.evals[-1]['per_class_accuracy'][k]:.4f}</td>" for r in with_evals)
        out.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    out.append("</table>")
    return "".join(out)


def _events_table(runs: list[Run]) -> str:
    one = len(runs) == 1
    out = ["<h2>Events (the loop and the guards)</h2>"]
    if not any(r.events for r in runs):
        return out[0] + "<p>none</p>"
    out.append("<table><tr>" + ("" if one else "<th>run</th>")
               + "<th>step</th><th>time</th><th>event</th><th>what happened</th></tr>")  # fmt: skip
    for i, r in enumerate(runs):
        for e in r.events:
            who = "" if one else f"<td>{_swatch(i)}{html.escape(r.name)}</td>"
            when = _when(e.get("wall"))
            out.append(
                f"<tr>{who}<td>{e['step']}</td><td>{when}</td><td>{html.escape(e['event'])}</td>"
                f"<td>{html.escape(e['message'])}</td></tr>"
            )
    out.append("</table>")
    return "".join(out)


def flat_recipe(d: dict, prefix: str = "") -> dict[str, object]:
    """A recipe as flat keys: {'guards': {'memory': True}} -> {'guards.memory': True}."""
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_recipe(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


ABSENT = "(absent)"  # a key one recipe does not have (a run of an older thresher)


def recipe_differences(recipes: list[dict]) -> dict[str, list[object]]:
    """The keys whose values differ between the recipes, each with every recipe's value
    (ABSENT where a recipe lacks the key)."""
    flat = [flat_recipe(r) for r in recipes]
    keys = sorted(set().union(*flat)) if flat else []
    return {k: [f.get(k, ABSENT) for f in flat] for k in keys
            if any(f.get(k, ABSENT) != flat[0].get(k, ABSENT) for f in flat)}  # fmt: skip


def _recipe_diff(runs: list[Run]) -> str:
    diff = recipe_differences([r.recipe for r in runs])
    same = len(set().union(*[flat_recipe(r.recipe) for r in runs])) - len(diff)
    head = "".join(f"<th>{_swatch(i)}{html.escape(r.name)}</th>" for i, r in enumerate(runs))
    out = [f"<h2>Recipes: the {len(diff)} keys that differ</h2>"]
    if diff:
        out.append(f"<table><tr><th>key</th>{head}</tr>")
        for key, values in diff.items():
            cells = "".join(
                f"<td{' class=diff' if k and v != values[0] else ''}>{html.escape(_value(v))}</td>"
                for k, v in enumerate(values)
            )
            out.append(f"<tr><td>{html.escape(key)}</td>{cells}</tr>")
        out.append("</table>")
    out.append(f"<p class=muted>The other {same} keys are the same in every run; highlighted: "
               f"a value that differs from the first run's.</p>")  # fmt: skip
    for r in runs:
        out.append(f"<details><summary>recipe of {html.escape(r.name)}</summary>"
                   f"<pre>{html.escape(r.recipe_text)}</pre></details>")  # fmt: skip
    return "".join(out)


def _value(v: object) -> str:
    """As the recipe's YAML says it: null, true, [0.5, 1.0]."""
    if v is ABSENT:
        return ABSENT
    return json.dumps(v) if v is None or isinstance(v, list | bool) else str(v)


def _plain_text(label: str) -> str:
    """A class name as matplotlib shows it literally: `cost_$5_to_$10` is not TeX."""
    return label.replace("$", r"\$")
