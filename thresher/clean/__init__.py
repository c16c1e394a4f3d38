"""Detectors: pure functions from catalog columns (and embeddings) to scored issues.

Calling the package runs every detector: `thresher.clean(workspace, ...)` is
`thresher.clean.findings.clean`.
"""

from thresher._callable import make_callable

make_callable(__name__, "thresher.clean.findings:clean")
