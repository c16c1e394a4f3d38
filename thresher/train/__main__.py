"""`python -m thresher.train RECIPE --data DIR [--out RUN] [--resume]`: one training process.

The entry point torchrun starts, once per rank: `torchrun --nproc-per-node 8 -m thresher.train
recipe.yaml --data export/ --out runs/r1` (with --nnodes and --rdzv-endpoint on several
machines). `thresher train --nproc N` runs exactly this on one machine.
"""

import sys

from thresher.cli import main

sys.argv[1:1] = ["train"]
main()
