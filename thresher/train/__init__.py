"""Training: the timm model and its parameter groups, the loop, checkpoints, the run report.

`thresher.train(recipe, data, out)` (thresher/api.py) runs `thresher.train.loop.train`.
"""
