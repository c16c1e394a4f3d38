"""Training: the timm model and its parameter groups, the loop, checkpoints, the run report.

Calling the package trains: `thresher.train(recipe, data, out)` is `thresher.train.loop.train`.
"""

from thresher._callable import make_callable

make_callable(__name__, "thresher.train.loop:train")
