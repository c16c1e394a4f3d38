"""thresher: from a web-scraped image pile to a clean, balanced dataset and a trained classifier.

Every CLI command is a function here, for notebooks and scripts:

    import thresher
    summary = thresher.scan("./crawl", workspace="./ws")
    thresher.demo(out="./demo-crawl")

Heavy modules (torch) are imported only when a function needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["scan", "demo", "Catalog", "ThresherError", "__version__"]


def __getattr__(name):
    if name == "scan":
        from thresher.scan.runner import scan

        return scan
    if name == "demo":
        from thresher.demo import demo

        return demo
    if name == "Catalog":
        from thresher.catalog import Catalog

        return Catalog
    if name == "ThresherError":
        from thresher.errors import ThresherError

        return ThresherError
    raise AttributeError(f"module 'thresher' has no attribute {name!r}")
