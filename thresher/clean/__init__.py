"""Detectors: pure functions from catalog columns (and embeddings) to scored issues."""
