"""Guards: small observers of the training loop, each with a pure decision function and one
narrow way to act (skip a step, roll back, recycle workers, pause, finish, stop, explain).

hooks.py (the fixed points a guard answers at, and its Verdict), numeric.py (NaN, Inf,
explosions), progress.py (non-convergence, overfitting), memory.py (host-memory leaks, GPU
memory growth), thermal.py (GPU temperature), samples.py (a user transform that raises). Each
module's docstring says what it catches, what it costs, and when it is wrong.
"""
