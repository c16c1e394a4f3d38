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

torch is imported only when a function needs it (embeddings, training).
"""

from __future__ import annotations

import sys
import types

from thresher.api import COMMANDS, clean, demo, export, review, scan, train

__version__ = "0.1.0"

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


class _Package(types.ModuleType):
    """The package `thresher`, whose six command names stay functions when their stage loads.

    Importing `thresher.scan` (the package) sets the attribute `thresher.scan` to it, which
    would hide the function `thresher.scan`. Instead the function keeps its place and takes
    the package's namespace as its own attributes, so `thresher.scan.runner`, `import
    thresher.scan.runner as r` and monkeypatching `thresher.scan.runner.x` all still work.
    """

    def __setattr__(self, name: str, value) -> None:
        command = COMMANDS.get(name)
        if command is not None and isinstance(value, types.ModuleType):
            command.__dict__ = value.__dict__
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

# Load the stage packages as before, so each command already carries its package's contents.
import thresher.clean  # noqa: E402, F401
import thresher.demo  # noqa: E402, F401
import thresher.export  # noqa: E402, F401
import thresher.review  # noqa: E402, F401
import thresher.scan  # noqa: E402, F401
import thresher.train  # noqa: E402, F401
