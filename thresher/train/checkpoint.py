"""Checkpoints: written whole or not at all, read back with weights_only=True.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only (nothing that needs
pickle's arbitrary code), saved to a temporary file in the same folder, fsynced, then renamed
over the old one: a crash (SIGKILL, power) leaves either the old or the new file, never half.
"""

from __future__ import annotations

from pathlib import Path

import torch

from thresher.errors import ThresherError
from thresher.files import atomic_write

LATEST = "checkpoint.pt"
BEST = "best.pt"


def save(path: Path, state: dict) -> None:
    """Atomically write `state` to PATH."""
    with atomic_write(path) as f:
        torch.save(state, f)


def load(path: Path) -> dict:
    """Read a checkpoint (tensors and plain data only: weights_only=True)."""
    if not path.exists():
        raise ThresherError(f"no checkpoint at {path}: nothing to resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ThresherError(f"cannot read the checkpoint {path}: {e}") from None


def rng_state() -> dict:
    """Every global RNG the training step draws from (dropout, stochastic depth)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
