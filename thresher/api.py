"""The commands as Python functions: `thresher.scan(...)`, `thresher.clean(...)`, ...

Each is a real function with the signature and docstring of the command it runs, so a
notebook completes its arguments and `help(thresher.scan)` explains it. Each imports its
stage only when called: `import thresher` stays light (no torch). tests/test_api.py holds
every signature equal to the function it calls.

The stage packages keep their names (`import thresher.scan.runner` works): the package
`thresher` keeps these functions as its attributes, and each function reaches its
package's contents (`thresher.scan.runner`) as attributes of its own (see thresher/__init__.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from thresher.config import DEFAULT_EMBEDDER, DEFAULT_WORKSPACE

if TYPE_CHECKING:
    from thresher.clean.findings import CleanSummary, DetectorProgress
    from thresher.config import CleanThresholds, ExportPolicy, Recipe, ScanConfig
    from thresher.demo import Finding
    from thresher.export import ExportSummary
    from thresher.scan.job import ScanSummary
    from thresher.train.loop import RunSummary


def scan(
    source: Path | str,
    workspace: Path | str = DEFAULT_WORKSPACE,
    *,
    workers: int | None = None,
    engine: str = "local",
    address: str | None = None,
    embed: bool = True,
    embedder: str = DEFAULT_EMBEDDER,
    weights: Path | str | None = None,
    config: ScanConfig | None = None,
    path_column: str = "path",
    label_column: str = "label",
    progress: bool = True,
    log=print,
) -> ScanSummary:
    """Scan SOURCE (an ImageFolder tree or a CSV/Parquet manifest) into the workspace catalog.

    Every image is read once: checksum, decode (draft-sized), width/height/format/mode,
    pHash and dHash, blank statistics, effective resolution and, when a backbone is
    available, an embedding. Rerunning is incremental: unchanged files are skipped, new or
    changed ones (size/mtime) scanned, vanished ones marked missing.

    `workers=0` runs in this process (no pool); `None` uses every core. `engine="ray"` runs
    the decode/hash/embed stage on a Ray cluster (`address`, or a local Ray). `config` holds
    the measuring settings (thresher.config.ScanConfig). `log` receives the one-line notes.
    Returns a ScanSummary (`.statuses` counts the catalog). `thresher scan` on the command line.
    """
    from thresher.scan.runner import scan as run

    return run(source, workspace, workers=workers, engine=engine, address=address, embed=embed,
               embedder=embedder, weights=weights, config=config, path_column=path_column,
               label_column=label_column, progress=progress, log=log)  # fmt: skip


def clean(
    workspace: Path | str = DEFAULT_WORKSPACE,
    thresholds: CleanThresholds | None = None,
    log=print,
    progress: DetectorProgress | None = None,
) -> CleanSummary:
    """Find every issue in the workspace's catalog and store the issue table; return a summary.

    Duplicates, low resolution, upscaled, blank, unreadable and label errors, each with its
    default action; `thresholds` (thresher.config.CleanThresholds) overrides any limit.
    The summary has `.by_issue`, `.flagged_share` and the balancing `.plan`.
    `progress(done, total, name)` is called as each detector starts.
    `thresher clean` on the command line.
    """
    from thresher.clean.findings import clean as run

    return run(workspace, thresholds, log, progress)


def review(
    workspace: Path | str = DEFAULT_WORKSPACE,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    log=print,
) -> None:
    """Serve the review page until Ctrl-C. Port 0 picks a free port (the URL says which).

    Every decision is saved in the catalog as it is made. A host that is not a loopback
    address needs a `token` (16 characters or more) that every request must carry.
    `thresher review` on the command line.
    """
    from thresher.review.server import serve

    serve(workspace, host, port, token, log)


def export(
    workspace: Path | str = DEFAULT_WORKSPACE,
    out: Path | str = "export",
    policy: ExportPolicy | None = None,
    link: str | None = None,
    log=print,
) -> ExportSummary:
    """Write the clean, balanced manifest: issues and review decisions applied, split, weighted.

    OUT/manifest.parquet + .csv (path, label, split, weight, image_id, group) and
    OUT/export.json; with link='hardlink' or 'symlink', also an ImageFolder tree in
    OUT/imagefolder/{train,val}/{label}/. `policy` (thresher.config.ExportPolicy) overrides
    the actions, the split and the balancing. `thresher export` on the command line.
    """
    from thresher.export import export as run

    return run(workspace, out, policy, link, log)


def train(
    recipe: Recipe | Path | str,
    data: Path | str,
    out: Path | str = "runs/run",
    resume: bool = False,
    progress: bool = True,
    log=print,
) -> RunSummary:
    """Train RECIPE on the manifest in DATA, writing checkpoints, metrics and a report to OUT.

    RECIPE is a thresher.config.Recipe or its YAML file; DATA the folder `export` wrote.
    Guarded against NaN losses, stalls, overfitting, leaks and heat; `resume=True` goes on
    from OUT's last checkpoint to the same weights. `thresher train` on the command line.
    """
    from thresher.train.loop import train as run

    return run(recipe, data, out, resume, progress, log)


def demo(
    out: Path | str = "demo-crawl",
    *,
    workers: int | None = None,
    embedder: str | None = None,
    weights: Path | str | None = None,
    progress: bool = True,
    log=print,
) -> tuple[object, object, list[Finding]]:
    """Generate the synthetic crawl in OUT, scan and clean it in OUT/workspace, compare.

    Returns the scan summary, the clean summary and the findings table. Reuses OUT's crawl if
    it already exists (the scan is then incremental). `thresher demo` on the command line.
    """
    from thresher.demo import demo as run

    return run(out, workers=workers, embedder=embedder, weights=weights, progress=progress, log=log)


COMMANDS = {
    "scan": scan,
    "clean": clean,
    "review": review,
    "export": export,
    "train": train,
    "demo": demo,
}
