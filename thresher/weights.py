"""One loader of pretrained weights for scan and train: by name, then by position.

A state dict written by the same library loads by name. The same architecture written by
another library (torchvision's mobilenet_v2 file into timm's `mobilenetv2_100`) holds the same
tensors in the same order under other names: it loads by position. Either way the classifier
head may stay fresh when the class count differs; every other tensor must fit, or the load
fails with one line that names the first tensors that did not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from thresher.errors import ThresherError


class WeightsMismatch(ThresherError):
    """The file's tensors do not fit the model: the message names which."""


@dataclass(frozen=True)
class LoadedWeights:
    """What a load took from the file and what it left fresh."""

    path: Path
    matched_by: str  # "name" or "position"
    loaded: int  # tensors taken from the file
    fresh: tuple[str, ...]  # the model's tensors left as initialised (the head, when it differs)

    def summary(self) -> str:
        """One line for the run's log."""
        fresh = f"; fresh: {', '.join(self.fresh)}" if self.fresh else "; nothing fresh"
        return f"loaded {self.loaded} tensors from {self.path} (by {self.matched_by}){fresh}"


def read_state(path: Path | str) -> dict[str, torch.Tensor]:
    """The tensors of a .pth/.pt/.safetensors file, unwrapped from a checkpoint's nesting."""
    path = Path(path)
    if not path.is_file():
        raise ThresherError(f"pretrained weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    # Checkpoints often nest the weights ({"state_dict": ...}, {"model": ...}).
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            return state[key]
    if not isinstance(state, dict):
        raise ThresherError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def head_names(model: torch.nn.Module) -> set[str]:
    """State-dict names of the classifier head: timm's get_classifier(), else the last Linear."""
    head = None
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
    else:
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                head = module
    if head is None:
        return set()
    ids = {id(t) for t in list(head.parameters()) + list(head.buffers())}
    return {k for k, t in model.state_dict(keep_vars=True).items() if id(t) in ids}


def load_into(model: torch.nn.Module, state: dict, path: Path | str = "weights") -> LoadedWeights:
    """Fit `state` into `model`, by name or else by position; only the head may stay fresh."""
    own = model.state_dict()
    head = head_names(model)
    by_name = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in by_name and k not in head]
    if not missing:
        return _apply(model, by_name, own, Path(path), "name")
    # By position: the same architecture under other names, heads (last) allowed to differ.
    theirs = list(state.items())
    if len(theirs) == len(own):
        pairs = list(zip(own.items(), theirs, strict=True))
        bad = [
            (k, tuple(v.shape), n, tuple(t.shape))
            for (k, v), (n, t) in pairs
            if v.shape != t.shape and k not in head
        ]
        if not bad:
            fit = {k: t for (k, v), (_, t) in pairs if v.shape == t.shape}
            return _apply(model, fit, own, Path(path), "position")
        k, mine, n, t = bad[0]
        detail = f"by position, {k} {list(mine)} meets {n} {list(t)}"
    else:
        detail = f"{len(theirs)} tensors for {len(own)}; by name {len(missing)} do not fit"
        first = missing[0]
        if first in state:
            detail += f", first {first} {list(state[first].shape)} vs {list(own[first].shape)}"
        else:
            detail += f", first {first} (absent)"
    raise WeightsMismatch(f"{path} does not fit {type(model).__name__}: {detail}")


def load_file_into(model: torch.nn.Module, path: Path | str) -> LoadedWeights:
    """Read a weights file and fit it into `model` (see load_into)."""
    return load_into(model, read_state(path), path)


def _apply(model, fit: dict, own: dict, path: Path, how: str) -> LoadedWeights:
    model.load_state_dict(fit, strict=False)
    fresh = tuple(k for k in own if k not in fit and not k.endswith("num_batches_tracked"))
    return LoadedWeights(path, how, len(fit), fresh)
