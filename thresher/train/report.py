"""The run report: one self-contained HTML page from the run folder's metrics and recipe.

Loss, accuracy and learning-rate curves, per-class accuracy, the confusion matrix of the last
evaluation, the recipe used, and every event the loop and the guards recorded.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from thresher.train import metrics

REPORT = "report.html"


def run_report(run: Path | str, out: Path | str | None = None) -> Path:
    """Write RUN/report.html (or OUT) from RUN/metrics.jsonl and RUN/recipe.yaml."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from thresher.train.checkpoint import BEST, LATEST, load

    run = Path(run)
    out = Path(out) if out else run / REPORT
    recs = metrics.read(run / "metrics.jsonl")
    train = [r for r in recs if r["kind"] == "train"]
    evals = [r for r in recs if r["kind"] == "eval"]
    events = [r for r in recs if r["kind"] == "event"]
    recipe = (run / "recipe.yaml").read_text() if (run / "recipe.yaml").exists() else ""
    classes: list[str] = []
    for name in (LATEST, BEST):
        if (run / name).exists():
            classes = load(run / name)["classes"]
            break

    def figure(draw, w=6.0, h=3.2) -> str:
        fig, ax = plt.subplots(figsize=(w, h), dpi=100)
        draw(ax)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'

    parts = [
        "<!doctype html><meta charset=utf-8><title>thresher run report</title><style>",
        "body{font:14px system-ui,sans-serif;margin:2em;color:#222;max-width:1300px}",
        ".row{display:flex;flex-wrap:wrap;gap:16px}table{border-collapse:collapse}",
        "td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}",
        "pre{background:#f6f6f6;padding:10px;border-radius:6px}</style>",
        f"<h1>thresher run report</h1><p>{html.escape(str(run))}</p>",
    ]
    last = evals[-1] if evals else None
    if train:
        t = train[-1]
        # The whole run's speed (every session of a resumed run), not the last window's.
        speed = t["images"] / t["seconds"] if t.get("seconds") else t["images_per_s"]
        parts.append(
            f"<p>{t['step']} optimizer steps, last loss {t['loss']:.4f}, "
            f"{speed:.0f} images/s over the run"
            + (
                f"; validation accuracy {last['accuracy']:.4f} "
                f"(best {max(e['accuracy'] for e in evals):.4f})"
                if last
                else ""
            )
            + f"; {len(events)} event{'' if len(events) == 1 else 's'}.</p>"
        )
    if train:
        steps = [r["step"] for r in train]
        parts.append('<h2>Curves</h2><div class="row">')

        def loss_plot(ax):
            ax.plot(steps, [r["loss"] for r in train], label="train (smoothed targets)")
            if evals:
                ax.plot([e["step"] for e in evals], [e["loss"] for e in evals], "o-", label="val")
            ax.set_xlabel("step")
            ax.set_title("loss")
            ax.legend()

        parts.append(figure(loss_plot))
        if evals:

            def acc_plot(ax):
                ax.plot([e["step"] for e in evals], [e["accuracy"] for e in evals], "o-")
                ax.set_xlabel("step")
                ax.set_title("validation accuracy")

            parts.append(figure(acc_plot))

        def lr_plot(ax):
            ax.plot(steps, [r["lr"] for r in train])
            ax.set_xlabel("step")
            ax.set_title("learning rate")

        parts.append(figure(lr_plot))
        parts.append("</div>")
    if last:
        names = classes or [str(i) for i in range(len(last["per_class_accuracy"]))]
        shown = [_plain_text(n) for n in names]  # matplotlib reads $...$ as TeX
        conf = np.array(last["confusion"])
        parts.append(
            f"<h2>Per-class accuracy (step {last['step']})</h2><table>"
            "<tr><th>class</th><th>accuracy</th><th>validation images</th></tr>"
        )
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
        parts.append(figure(confusion_plot, side, side))
    parts.append("<h2>Events (the loop and the guards)</h2>")
    if events:
        parts.append("<table><tr><th>step</th><th>event</th><th>what happened</th></tr>")
        for e in events:
            parts.append(
                f"<tr><td>{e['step']}</td><td>{html.escape(e['event'])}</td>"
                f"<td>{html.escape(e['message'])}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append("<p>none</p>")
    parts.append(f"<h2>Recipe</h2><pre>{html.escape(recipe)}</pre>")
    out.write_text("\n".join(parts))
    return out


def _plain_text(label: str) -> str:
    """A class name as matplotlib shows it literally: `cost_$5_to_$10` is not TeX."""
    return label.replace("$", r"\$")
