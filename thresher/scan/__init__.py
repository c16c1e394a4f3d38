"""Decode once, measure everything: hashes, quality, embed, the per-batch worker, the runner.

`thresher.scan(source, workspace, ...)` (thresher/api.py) runs `thresher.scan.runner.scan`.
"""
