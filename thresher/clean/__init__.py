"""Detectors: pure functions from catalog columns (and embeddings) to scored issues.

`thresher.clean(workspace, ...)` (thresher/api.py) runs `thresher.clean.findings.clean`.
"""
