"""Training data: the exported manifest, its split, the transforms and the balancing sampler."""
