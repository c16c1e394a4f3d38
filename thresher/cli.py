"""The `thresher` command line. Thin: parse, call one function of the library, print.

Every command is a function of the `thresher` package too; see thresher/__init__.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from thresher.config import DEFAULT_EMBEDDER, DEFAULT_WORKSPACE, ScanConfig
from thresher.errors import ThresherError, user_message
from thresher.wording import plural

app = typer.Typer(
    help="thresher: from a web-scraped image pile to a clean, balanced dataset and a trained "
    "classifier, without the crashes.\n\nThe pipeline: scan -> clean -> review -> export -> "
    "train. Try `thresher demo` first.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # a message stays one line, however long

WORKSPACE_HELP = (
    "Workspace folder holding the catalog (catalog.sqlite) and embeddings.npy; "
    "created if missing. Default: ./thresher-ws, or $THRESHER_WORKSPACE."
)
Workspace = typer.Option(
    DEFAULT_WORKSPACE, "--workspace", "-w", envvar="THRESHER_WORKSPACE", help=WORKSPACE_HELP
)
# The commands after scan read a workspace and rightly refuse one that is not there.
ExistingWorkspace = typer.Option(
    DEFAULT_WORKSPACE,
    "--workspace",
    "-w",
    envvar="THRESHER_WORKSPACE",
    help="Workspace folder made by `thresher scan` (catalog.sqlite, embeddings.npy). "
    "Default: ./thresher-ws, or $THRESHER_WORKSPACE.",
)


@app.command()
def scan(
    source: Path = typer.Argument(
        ...,
        help="An ImageFolder tree (one sub-folder per class, nested folders allowed) or a "
        "CSV/Parquet manifest with path and label columns (paths relative to its folder).",
        show_default=False,
    ),
    workspace: Path = Workspace,
    workers: int = typer.Option(
        None,
        min=0,
        help="Worker processes (default: every core; 0 = in this process). With --engine ray: "
        "actors (default: every CPU of the cluster).",
    ),
    engine: str = typer.Option(
        "local",
        help="local: processes on this machine. ray: the decode/hash/embed stage on a Ray "
        "cluster (pip install 'thresher\\[ray]'; every node must see SOURCE at the same path); "
        "the same catalog either way.",
    ),
    address: str = typer.Option(
        None, help="With --engine ray: the cluster to join (host:port); default: a local Ray."
    ),
    embed: bool = typer.Option(True, help="Compute embeddings when a backbone is available."),
    embedder: str = typer.Option(
        DEFAULT_EMBEDDER,
        help="Backbone for embeddings: timm:<model> or torchvision:<model>. The default is "
        "small and fast on a CPU; timm:vit_small_patch14_dinov2.lvd142m is better for "
        "similarity on a GPU.",
    ),
    weights: Path = typer.Option(
        None, help="Local state dict (.pth) for the embedder, for offline machines."
    ),
    path_column: str = typer.Option("path", help="Manifest column holding the image paths."),
    label_column: str = typer.Option("label", help="Manifest column holding the labels."),
    batch_size: int = typer.Option(
        ScanConfig().batch_size, help="Files per task and per catalog commit."
    ),
    view_px: int = typer.Option(
        ScanConfig().view_px,
        help="Decode images to a view with at least this short side (JPEG draft mode).",
    ),
    device: str = typer.Option(
        "auto",
        help="Where the embedder runs: auto (the GPU when there is one, half precision), cpu "
        "or cuda.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Read every image once into the catalog (hashes, sizes, blur, embeddings); resumable."""
    from thresher.scan.runner import scan as run_scan

    cfg = _config(ScanConfig, batch_size=batch_size, view_px=view_px, device=device)
    s = run_scan(
        source,
        workspace,
        workers=workers,
        engine=engine,
        address=address,
        embed=embed,
        embedder=embedder,
        weights=weights,
        config=cfg,
        path_column=path_column,
        label_column=label_column,
        progress=not quiet,
        log=lambda m: err.print(m, markup=False, highlight=False),
    )
    _print_scan(s)
    if s.interrupted:
        raise typer.Exit(130)


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("demo-crawl"), "--out", help="Where the crawl is made."),
    workers: int = typer.Option(None, help="Worker processes (default: every core)."),
    embedder: str = typer.Option(DEFAULT_EMBEDDER, help="Backbone for embeddings."),
    weights: Path = typer.Option(None, help="Local state dict for the embedder (offline)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Make a synthetic messy crawl, run every stage that exists, compare with the truth."""
    from thresher.demo import demo as run_demo

    s, cleaned, findings = run_demo(
        out_dir,
        workers=workers,
        embedder=embedder,
        weights=weights,
        progress=not quiet,
        log=lambda m: err.print(m, markup=False, highlight=False),
    )
    _print_scan(s)
    _print_clean(cleaned)
    t = Table(title="demo: found vs planted")
    for col in ("check", "planted", "found", "agree", "note"):
        t.add_column(col, justify="right" if col in ("planted", "found", "agree") else "left")
    for f in findings:
        t.add_row(f.check, str(f.planted), str(f.found), str(f.agree), f.note)
    out.print(t)
    ws = out_dir / "workspace"
    out.print(
        f"next: thresher review -w {ws} (the review queue in a browser); "
        f"thresher export -w {ws} --out {out_dir / 'export'}; "
        f"thresher train RECIPE.yaml --data {out_dir / 'export'}"
    )


@app.command()
def clean(
    workspace: Path = ExistingWorkspace,
    config: Path = typer.Option(
        None,
        help="YAML file overriding clean thresholds (keys: see thresher/config.py "
        "CleanThresholds, e.g. min_short_side_px: 384).",
    ),
    report: bool = typer.Option(True, help="Write the HTML report (workspace/report.html)."),
) -> None:
    """Find duplicates, low-res, upscaled, blank, unreadable and mislabelled images; report."""
    from thresher.clean.findings import clean as run_clean
    from thresher.clean.report import html_report
    from thresher.config import CleanThresholds, load_yaml
    from thresher.progress import stage_bars

    th = load_yaml(config, CleanThresholds) if config else None
    stages = ["find issues", "write the report"] if report else ["find issues"]
    with stage_bars("clean", stages) as step:
        step(0)
        s = run_clean(
            workspace,
            th,
            log=lambda m: err.print(m, markup=False, highlight=False),
            progress=lambda done, total, name: step(0, done, total, name),
        )
        if report:
            step(1)
            page = html_report(workspace, progress=lambda done, total: step(1, done, total))
    _print_clean(s)
    if report:
        out.print(f"report: {page}")


@app.command()
def review(
    workspace: Path = ExistingWorkspace,
    port: int = typer.Option(
        8765, min=0, max=65535, help="Port to listen on; 0 picks a free one."
    ),
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to listen on. Anything but loopback needs --token as well: the page "
        "can change your dataset.",
    ),
    token: str = typer.Option(
        None,
        envvar="THRESHER_REVIEW_TOKEN",
        help="Secret every request must carry (the printed URL holds it), at least 16 "
        "characters. Required with a non-loopback --host. Prefer the environment variable "
        "THRESHER_REVIEW_TOKEN: a --token on the command line shows in `ps` to every user.",
    ),
) -> None:
    """Settle the review queue in a browser: k keep, d drop, 1-9 relabel, u undo.

    Each decision is written to the catalog the moment it is made; stopping the server
    (however) loses none, and it reopens at the first undecided file.
    """
    from thresher.review.server import serve

    if any(a == "--token" or a.startswith("--token=") for a in sys.argv):
        err.print(
            "note: a --token on the command line shows in `ps` to every user of this machine; "
            "THRESHER_REVIEW_TOKEN keeps it out",
            markup=False,
        )
    serve(workspace, host=host, port=port, token=token, log=lambda m: print(m, flush=True))


@app.command()
def export(
    out_dir: Path = typer.Option(
        ..., "--out", help="Folder for manifest.parquet/.csv, export.json."
    ),
    workspace: Path = ExistingWorkspace,
    policy: Path = typer.Option(
        None,
        help="YAML overriding the export policy (thresher/config.py ExportPolicy), e.g. "
        "'actions: {label_error: relabel}' or 'val_fraction: 0.2'.",
    ),
    val_fraction: float = typer.Option(None, help="Share of each class for validation (0.1)."),
    seed: int = typer.Option(None, help="Seed of the split (0)."),
    link: str = typer.Option(
        None, help="Also build an ImageFolder tree of 'hardlink' or 'symlink' in OUT/imagefolder."
    ),
) -> None:
    """Write the clean, balanced manifest: issues and review decisions applied, split, weighted."""
    from thresher.config import ExportPolicy
    from thresher.export import export as run_export

    p = _yaml_with_flags(ExportPolicy, policy, val_fraction=val_fraction, seed=seed)
    s = run_export(workspace, out_dir, p, link, log=lambda m: err.print(m, markup=False))
    t = Table(title="export: classes")
    for col in ("class", "before", "train", "val", "weight"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for cls in sorted(
        set(s.counts_before) | set(s.classes), key=lambda k: -s.counts_before.get(k, 0)
    ):
        t.add_row(
            cls,
            str(s.counts_before.get(cls, 0)),
            str(s.counts_train.get(cls, 0)),
            str(s.counts_val.get(cls, 0)),
            f"x{s.plan[cls]:.1f}" if cls in s.plan else "-",
        )
    out.print(t)
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(s.dropped.items(), key=lambda kv: -kv[1]))
    out.print(
        f"{s.exported} of {s.files} files exported ({s.relabelled} relabelled, "
        f"{s.decisions_applied} review decisions applied); dropped: {dropped or 'none'}"
    )
    plan = ", ".join(f"{c} x{f:.1f}" for c, f in s.plan.items() if f > 1)
    out.print(f"balancing plan (the manifest's weight column): {plan or 'balanced already'}")
    out.print(
        f"manifest: {out_dir / 'manifest.parquet'} (and .csv); "
        f"next: thresher train RECIPE.yaml --data {out_dir}"
    )


@app.command()
def train(
    recipe: Path = typer.Argument(
        ...,
        help="Recipe YAML (keys: thresher/config.py Recipe; every default is the reported "
        "recipe, so an empty file trains resnet50 with it).",
        show_default=False,
    ),
    data: Path = typer.Option(..., help="An export folder (manifest.parquet) or a manifest file."),
    out_dir: Path = typer.Option(
        None,
        "--out",
        help="Run folder for checkpoints, metrics.jsonl, report.html (default: runs/RECIPE-NAME).",
    ),
    resume: bool = typer.Option(False, help="Go on from OUT/checkpoint.pt."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    nproc: int = typer.Option(
        1,
        min=1,
        help="Data-parallel processes on this machine (one per GPU; gloo on CPUs), started "
        "with torchrun. batch_size is per process. Several machines: run `torchrun ... -m "
        "thresher.train RECIPE --data DIR --out RUN` on each.",
    ),
    fit_to_data: bool = typer.Option(
        False,
        "--fit-to-data",
        help="Size the recipe to the data for fine-tuning (steps from --epochs, warm-up as a "
        "share, Lion rates from AdamW's): every value chosen is printed and in RUN/recipe.yaml.",
    ),
    epochs: int = typer.Option(15, min=1, help="With --fit-to-data: epochs of the run."),
) -> None:
    """Train a timm model with the recipe: resumable, one Ctrl-C stops at a checkpoint.

    Exit status: 0 done, 2 a user error, 3 a guard stopped the run, 130 (SIGINT) or 143
    (SIGTERM) when a signal stopped it at a checkpoint (--resume goes on).
    """
    from thresher.config import Recipe, load_yaml

    r = load_yaml(recipe, Recipe)  # a bad recipe is one line, before torch is imported
    run = out_dir or Path("runs") / recipe.stem
    fitted_path = run / "recipe.fitted.yaml"  # what --resume and the --nproc processes read
    if fit_to_data and resume and fitted_path.exists():
        r, recipe = load_yaml(fitted_path, Recipe), fitted_path
    elif fit_to_data:
        import yaml

        from thresher.train.fit import fit_to_manifest

        fitted = fit_to_manifest(r, data, epochs)
        err.print("--fit-to-data chose:", markup=False, highlight=False)
        for line in fitted.lines():
            err.print(line, markup=False, highlight=False)
        r, recipe = fitted.recipe, fitted_path
        run.mkdir(parents=True, exist_ok=True)
        fitted_path.write_text(yaml.safe_dump(r.model_dump(mode="json"), sort_keys=False))
    from thresher.train.distributed import from_env
    from thresher.train.launch import closing_lines, exit_status, launch

    if nproc > 1:
        if from_env().world > 1:
            raise ThresherError("--nproc starts torchrun; under torchrun already, leave it out")
        args = [str(recipe), "--data", str(data), "--out", str(run)]
        raise typer.Exit(launch(nproc, args + ["--resume"] * resume + ["--quiet"] * quiet))
    from thresher.train.loop import train as run_train

    s = run_train(
        r,
        data,
        run,
        resume=resume,
        progress=not quiet,
        log=lambda m: err.print(m, markup=False, highlight=False),
    )
    if from_env().main:  # one closing line per run, not per process
        lines, problems = closing_lines(s, recipe, data, run)
        for line in lines:
            out.print(line, markup=False, highlight=False)
        for line in problems:
            err.print(line, markup=False, highlight=False)
    raise typer.Exit(exit_status(s))


@app.command()
def report(
    runs: list[Path] = typer.Argument(
        ..., help="Run folders (the --out of `thresher train`).", show_default=False
    ),
    out_file: Path = typer.Option(
        None,
        "--out",
        help="The HTML file to write (default: RUN/report.html for one run, "
        "./runs-compared.html for several).",
    ),
) -> None:
    """The run report of RUN, or one page comparing RUNS: curves overlaid, recipes diffed."""
    from thresher.train.report import compare_report, run_report

    if len(runs) == 1:
        page = run_report(runs[0], out_file)
    else:
        page = compare_report(runs, out_file or Path("runs-compared.html"))
    out.print(f"report: {page}", markup=False, highlight=False)


@app.command()
def doctor(
    recipe: Path = typer.Option(
        None, help="A recipe: also estimate (CPU) or probe (GPU) the largest batch that fits."
    ),
    data: Path = typer.Option(
        None, help="With --recipe: time its DataLoader and check its augmentation for leaks."
    ),
    out_dir: Path = typer.Option(Path("."), "--out", help="Where the run will write (free disk)."),
) -> None:
    """Check the machine (versions, GPUs, RAM, disk) and a recipe's data pipeline."""
    from thresher.config import Recipe, load_yaml

    r = load_yaml(recipe, Recipe) if recipe else None  # a bad recipe: one line, before torch
    from thresher.doctor import doctor as run_doctor

    if data is not None and r is None:
        raise ThresherError("--data needs --recipe (the pipeline to check is the recipe's)")
    rep = run_doctor(r, data, out_dir)
    for title, rows in (("machine", rep.machine), ("GPUs", rep.gpus), ("pipeline", rep.pipeline)):
        if not rows:
            continue
        t = Table(title=title)
        for col in ("check", "value", "verdict"):
            t.add_column(col)
        for what, value, verdict in rows:
            t.add_row(what, value, f"[red]{verdict}[/red]" if verdict else "ok")
        out.print(t)
    for p in rep.problems:
        out.print(f"problem: {p}", markup=False)
    for w in rep.warnings:
        out.print(f"warning: {w}", markup=False)
    for n in rep.notes:
        out.print(f"note: {n}", markup=False)
    if rep.problems:
        raise typer.Exit(1)
    n = len(rep.warnings)
    out.print(f"no problem found, {n} warning{'' if n == 1 else 's'}" if n else "no problem found")


@app.command()
def issues(
    out_file: Path = typer.Option(..., "--out", help="Where to write: FILE.csv or FILE.parquet."),
    workspace: Path = ExistingWorkspace,
) -> None:
    """Write the issue table (one row per file and issue) as CSV or Parquet."""
    from thresher.clean.report import write_issues

    n = write_issues(out_file, workspace)
    out.print(f"{n} rows -> {out_file}")


@app.command("ddp-check")
def ddp_check(
    recipe: Path = typer.Argument(..., help="The recipe YAML to check.", show_default=False),
    nproc: int = typer.Option(2, min=2, help="Processes of the data-parallel side."),
    data: Path = typer.Option(
        None, help="An export folder or manifest (default: a few generated images)."
    ),
    setup: str = typer.Option(
        "thresher.train.ddp_check:THRESHER",
        help="'module:name' of a thresher.train.ddp_check.Setup: the pieces to check "
        "(thresher's own by default; your seeding, sampler or step to check yours).",
    ),
    timeout: float = typer.Option(
        300, help="Seconds before a rank that has not finished is called hung and killed."
    ),  # fmt: skip
) -> None:
    """Check that NPROC processes take the same first step as one process would.

    Compares initial weights, samples, augmented pixels, loss, every gradient and every
    updated weight, and names the likely cause of what differs. Exit status 1 when
    something differs.
    """
    from rich.markup import escape

    from thresher.config import Recipe, load_yaml

    r = load_yaml(recipe, Recipe)  # a bad recipe is one line, before torch is imported
    from thresher.train.ddp_check import ddp_check as run_check

    res = run_check(r, data, nproc, setup, timeout, log=lambda m: err.print(m, markup=False))
    t = Table(title=f"ddp-check: 1 process vs {nproc}")
    for col in ("compared", "verdict", "detail", "likely cause"):
        t.add_column(col, overflow="fold")
    colour = {"ok": "green", "note": "yellow"}
    for f in res.findings:
        c = colour.get(f.verdict, "red")
        t.add_row(escape(f.check), f"[{c}]{f.verdict}[/{c}]", escape(f.detail), escape(f.cause))
    out.print(t)
    verdict = "the same step" if res.passed else "NOT the same step"
    out.print(f"{verdict} ({res.seconds:.0f} s)")
    if not res.passed:
        raise typer.Exit(1)


@app.command()
def cost(
    images: int = typer.Option(None, help="Training images (1,000,000)."),
    epochs: float = typer.Option(None, help="Passes over them (90)."),
    steps: int = typer.Option(None, help="Optimizer steps instead of epochs (with --batch-size)."),
    batch_size: int = typer.Option(None, help="Global batch, with --steps (256)."),
    model: str = typer.Option(None, help="timm model (resnet50)."),
    image_size: int = typer.Option(None, help="Training image size, px (224)."),
    options: Path = typer.Option(
        None,
        help="YAML plan (thresher/config.py CostPlan): its `options` list prices your own "
        "cloud offers and machines; the flags above override its plan.",
    ),
    measure: bool = typer.Option(
        False, help="Also time real training steps of the model on this machine's device."
    ),
    measure_steps: int = typer.Option(5, min=1, help="Steps timed by --measure."),
    measure_batch: int = typer.Option(32, min=1, help="Batch size of the --measure steps."),
    loader_rate: float = typer.Option(
        None,
        help="Images/s one training process's DataLoader delivers (`thresher doctor --recipe "
        "R --data D` prints it): each GPU goes no faster than the slower of the two.",
    ),
    amortise: bool = typer.Option(
        True, help="Count the owned GPUs' purchase price, spread over their lifetime."
    ),
) -> None:
    """Time and money of a training plan, cloud vs local, side by side.

    Throughput is measured (--measure) or taken from a table of published ResNet-50 rates
    (thresher/cost.py RATES, with sources), scaled to the model by FLOPs. Every price is an
    input: see --options.
    """
    from thresher.config import CostPlan
    from thresher.cost import RATES, format_hours
    from thresher.cost import cost as run_cost
    from thresher.cost import measure as run_measure

    p = _yaml_with_flags(CostPlan, options, images=images, epochs=epochs, steps=steps,
                         batch_size=batch_size, model=model, image_size=image_size,
                         loader_images_per_s=loader_rate)  # fmt: skip
    if not amortise:
        p = p.model_copy(
            update={"options": [o.model_copy(update={"purchase_price_per_gpu": 0.0})
                                for o in p.options]}
        )  # fmt: skip
    measured = None
    if measure:
        measured = run_measure(p.model, p.image_size, measure_batch, measure_steps,
                               log=lambda m: err.print(m, markup=False))  # fmt: skip
    rows = run_cost(p, measured)
    what = (f"{p.steps:,} steps x {p.batch_size}" if p.steps
            else f"{p.images:,} images x {p.epochs:g} epochs")  # fmt: skip
    c = p.currency
    t = Table(title=f"cost: {p.model} at {p.image_size} px, {what}")
    for col in ("option", "GPUs", "img/s", "time", "rent", "kWh", "power", "hardware", "total"):
        t.add_column(col, justify="left" if col == "option" else "right")

    def money(v: float) -> str:
        return f"{c}{v:,.0f}" if v >= 100 else f"{c}{v:,.2f}"

    for e in rows:
        t.add_row(e.option, str(e.gpus), f"{e.images_per_s:,.0f}", format_hours(e.hours),
                  money(e.rent), f"{e.kwh:,.1f}", money(e.power), money(e.hardware),
                  money(e.total))  # fmt: skip
    out.print(t)
    bound = [e.option for e in rows if e.loader_bound]
    if bound:
        out.print(f"limited by the loader ({p.loader_images_per_s:,.0f} images/s per process), "
                  f"not the GPU: {', '.join(bound)}", markup=False)  # fmt: skip
    used = {o.gpu for o in p.options if o.images_per_s_per_gpu is None and o.gpu in RATES}
    for gpu in sorted(used):
        g = RATES[gpu]
        out.print(f"{gpu}: {g.images_per_s:,.0f} img/s for resnet50 at 224 px, {g.watts:.0f} W; "
                  f"source: {g.source}", markup=False)  # fmt: skip
    if used and (p.model, p.image_size) != ("resnet50", 224):
        out.print(f"rates scaled to {p.model} at {p.image_size} px by forward FLOPs "
                  "(an estimate: --measure on the GPU itself is better)")  # fmt: skip


def _yaml_with_flags(schema, path: Path | None, /, **flags):
    """SCHEMA read from the YAML file at PATH (or its defaults), each flag given laid over it.

    A flag left at None was not given and keeps the file's value; a bad value either way is
    one line naming the key.
    """
    from thresher.config import load_yaml

    base = load_yaml(path, schema) if path else schema()
    given = {k: v for k, v in flags.items() if v is not None}
    return _config(schema, **{**base.model_dump(), **given})


def _config(schema, /, **values):
    from pydantic import ValidationError

    from thresher.config import describe_validation_error

    try:
        return schema(**values)
    except ValidationError as e:
        raise ThresherError(describe_validation_error(e)) from None


def _print_scan(s) -> None:
    t = Table(title="catalog")
    t.add_column("status")
    t.add_column("files", justify="right")
    total = sum(s.statuses.values()) or 1
    t.add_column("share", justify="right")
    for status, n in sorted(s.statuses.items(), key=lambda kv: -kv[1]):
        t.add_row(status, str(n), f"{100 * n / total:.1f}%")
    out.print(t)
    emb = f"{s.embedded} embedded with {s.embedder}" if s.embedder else "no embeddings"
    out.print(
        f"{s.files} files in {s.source} -> {s.workspace}: {s.scanned} scanned, "
        f"{s.unchanged} unchanged{f' ({s.relabelled} relabelled)' if s.relabelled else ''}, "
        f"{s.aliases} aliases, {s.newly_missing} newly missing; {emb}; {s.seconds:.1f} s"
    )


def _print_clean(s) -> None:
    from thresher.clean.report import kept_copies_note
    from thresher.issue_model import ACTIONS, BENCH_PRECISION

    t = Table(title="clean")
    cols = ("issue", "files", "share", "action", "kept copies", "confidence",
            "precision on real images")  # fmt: skip
    widest = max(map(len, s.by_issue), default=5)  # an issue's name is never cut short
    for col in cols:
        t.add_column(col, justify="left" if col in ("issue", "action") else "right",
                     min_width=widest if col == "issue" else None)  # fmt: skip
    for kind, n in sorted(s.by_issue.items(), key=lambda kv: -kv[1]):
        conf = s.confidence.get(kind)
        bench = BENCH_PRECISION.get(kind, 1.0 if ACTIONS[kind] == "drop" else None)
        t.add_row(
            kind,
            str(n),
            f"{100 * n / max(s.files, 1):.1f}%",
            ACTIONS[kind],
            str(s.kept[kind]) if kind in s.kept else "",
            "" if conf is None else f"{conf:.2f}",
            "" if bench is None else f"{bench:.2f}",
        )
    out.print(t)
    note = kept_copies_note(s.by_issue, s.kept)
    if note:
        out.print(note, markup=False, highlight=False)
    out.print(
        f"{100 * s.flagged_share:.1f}% of files flagged ({s.flagged} of {s.files}); "
        f"{plural(s.duplicate_groups, 'duplicate group')}; "
        f"{plural(s.review, 'file')} in the review queue; "
        f"class imbalance {s.imbalance_before:.1f}:1 before, {s.imbalance_after:.1f}:1 after "
        "cleaning"
    )
    plan = ", ".join(f"{c} x{f:.1f}" for c, f in s.plan.items() if f > 1)
    if plan:
        out.print(f"balancing plan (applied by train): oversample {plan}")


def main() -> None:
    """Entry point: user errors become one line and exit code 2, never a traceback."""
    try:
        app()
    except ThresherError as e:
        err.print(f"error: {user_message(e)}", markup=False, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
