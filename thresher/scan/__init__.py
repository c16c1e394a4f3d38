"""Decode once, measure everything: decode, hashes, quality, embed, and the runner driving them.

Calling the package runs the scan: `thresher.scan(source, workspace, ...)` is
`thresher.scan.runner.scan`.
"""

from thresher._callable import make_callable

make_callable(__name__, "thresher.scan.runner:scan")
