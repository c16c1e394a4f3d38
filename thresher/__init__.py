"""thresher: from a web-scraped image pile to a clean, balanced dataset and a trained classifier.

Every CLI command is a function here, for notebooks and scripts:

    import thresher
    summary = thresher.scan("./crawl", workspace="./ws")
    found = thresher.clean(workspace="./ws")           # the issue table, in the catalog
    thresher.write_issues("issues.parquet", workspace="./ws")
    thresher.html_report(workspace="./ws")
    thresher.review(workspace="./ws", port=8765)       # the review page, until Ctrl-C
    thresher.export(workspace="./ws", out="./export")  # manifest.parquet, split, weights
    thresher.train("recipe.yaml", data="./export", out="./runs/r1")
    thresher.demo(out="./demo-crawl")

torch is imported only when a function needs it (embeddings).
"""

from __future__ import annotations

__version__ = "0.1.0"

# Six commands share their names with the module that holds them, made callable (see
# thresher/_callable.py): `thresher.scan(...)`, `thresher.clean(...)`,
# `thresher.review(...)`, `thresher.export(...)`, `thresher.train(...)`, `thresher.demo(...)`.
from thresher import clean, demo, export, review, scan, train  # noqa: E402

__all__ = [
    "scan",
    "clean",
    "write_issues",
    "issue_table",
    "html_report",
    "review",
    "export",
    "train",
    "demo",
    "Catalog",
    "ThresherError",
    "__version__",
]

_LAZY = {
    "write_issues": "thresher.clean.report",
    "issue_table": "thresher.clean.report",
    "html_report": "thresher.clean.report",
    "Catalog": "thresher.catalog",
    "ThresherError": "thresher.errors",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'thresher' has no attribute {name!r}")
