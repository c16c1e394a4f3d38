"""`python -m thresher.train RECIPE --data DIR [--out RUN] [--resume] [-q]`: one training process.

The entry point torchrun starts, once per rank (train/launch.py).
"""

from thresher.train.launch import main

main()
