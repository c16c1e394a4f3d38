"""Feature embeddings from a pretrained backbone (timm or torchvision), for similarity search.

`--embedder timm:<name>` or `torchvision:<name>`; `--weights FILE` loads a local state dict for
that architecture (the offline form). Without weights, timm / torchvision download them as they
normally do; where that is impossible, `load_embedder` raises EmbedderUnavailable with one line
that says so, and the scan goes on without embeddings.

Embeddings are the backbone's pooled features (classifier removed), L2-normalised, float16.
On a GPU (`--device`, auto by default) the backbone runs there in half precision, a task's
images in one pass; the uint8 thumbnails are copied, converted and normalised on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EmbedderUnavailable(Exception):
    """No usable backbone: the message is the one line the scan prints before going on."""


@dataclass
class Embedder:
    """A loaded backbone and what the scan workers need to feed it."""

    spec: str
    model: object  # torch.nn.Module, in eval mode, classifier removed
    dim: int
    input_side: int  # square input the workers prepare: (side, side, 3) uint8
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: str = "cpu"  # "cuda": the model is there, in float16

    def pass_size(self, configured: int) -> int:
        """Images per forward pass: the configured (small, cache-friendly) batch on a CPU; on a
        GPU at least 256, so a scan task's images go in one pass."""
        return configured if self.device == "cpu" else max(configured, 256)


def load_embedder(spec: str, weights: Path | str | None = None, device: str = "cpu") -> Embedder:
    """Build the backbone named by `spec` ('timm:<model>' or 'torchvision:<model>') on
    `device` (auto, cpu or cuda)."""
    import torch

    from thresher.devices import resolve_device

    where = resolve_device(device)  # before any weights are read: a bad --device is one line

    lib, _, name = spec.partition(":")
    if lib not in ("timm", "torchvision") or not name:
        raise EmbedderUnavailable(
            f"--embedder must be timm:<model> or torchvision:<model>, not {spec!r}"
        )
    if weights is not None and not Path(weights).is_file():
        raise EmbedderUnavailable(f"weights file not found: {weights}")
    try:
        model, mean, std, side = (_timm if lib == "timm" else _torchvision)(name, weights)
    except EmbedderUnavailable:
        raise
    except Exception as e:
        msg = str(e).split(". ")[0].splitlines()[0][:160] if str(e) else ""
        if weights is not None:
            if msg.startswith("Weights only load failed"):
                msg = "it holds more than tensors, which weights_only loading refuses"
            # A junk file fails deep in the unpickler with a bare number or 'pop from empty
            # list': name the file and what it should be, and the error's type.
            raise EmbedderUnavailable(
                f"{spec}: cannot load --weights {weights}: not a PyTorch state dict "
                f"(.pth/.pt) this architecture reads ({type(e).__name__}: {msg or 'no detail'})"
            ) from None
        raise EmbedderUnavailable(
            f"{spec}: no pretrained weights could be had ({msg or type(e).__name__}); "
            "pass --weights FILE.pth for offline use"
        ) from None
    # channels_last: oneDNN's fast path for convolutions on the CPU (faster for MobileNetV2 in a
    # by-hand timing; bench/scan.py measures the resulting embedding rate, not the difference).
    model = model.eval().to(memory_format=torch.channels_last)
    if where.type == "cuda":
        model = model.to(where, dtype=torch.float16)
    with torch.inference_mode():
        probe = torch.zeros(1, 3, side, side, device=where, dtype=next(model.parameters()).dtype)
        dim = int(model(probe).shape[1])
    return Embedder(spec, model, dim, side, mean, std, where.type)


def _timm(name: str, weights):
    import timm

    if weights is None:
        model = timm.create_model(name, pretrained=True)
    else:
        model = timm.create_model(name, pretrained=False)
        _load_state(model, weights)
    model.reset_classifier(0)
    cfg = model.pretrained_cfg or {}
    side = int(cfg.get("input_size", (3, 224, 224))[-1])
    return model, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)), side


def _torchvision(name: str, weights):
    import torchvision

    if weights is None:
        model = torchvision.models.get_model(name, weights="DEFAULT")
    else:
        model = torchvision.models.get_model(name, weights=None)
        _load_state(model, weights)
    _drop_classifier(model)
    return model, IMAGENET_MEAN, IMAGENET_STD, 224


def _load_state(model, weights) -> None:
    """Load a weights file by name, or by position (thresher.weights, shared with train)."""
    from thresher.weights import WeightsMismatch, load_file_into

    try:
        load_file_into(model, weights)
    except WeightsMismatch as e:
        raise EmbedderUnavailable(f"the weights do not fit this architecture: {e}") from None


def _drop_classifier(model) -> None:
    """Replace the last Linear layer with Identity, so the model returns pooled features.

    Works for every torchvision classifier (resnet.fc, mobilenet/efficientnet/convnext
    classifier[-1], vit heads.head), whose last Linear is the classification head.
    """
    import torch.nn as nn

    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise EmbedderUnavailable("model has no Linear classification head to remove")
    parent = model
    *path, leaf = last.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, leaf, nn.Identity())


def embed_batch(embedder: Embedder, pixels: np.ndarray) -> np.ndarray:
    """(N, side, side, 3) uint8 -> (N, dim) float32, L2-normalised."""
    import torch

    # NHWC uint8 permuted to NCHW is already channels_last in memory: no copy. On a GPU the
    # uint8 thumbnails travel (a quarter of float32's bytes) and are converted there.
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(embedder.device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(embedder.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(embedder.std, device=x.device).view(1, 3, 1, 1)
    dtype = torch.float16 if embedder.device == "cuda" else torch.float32
    with torch.inference_mode():
        x = ((x - mean) / std).to(dtype).contiguous(memory_format=torch.channels_last)
        f = torch.nn.functional.normalize(embedder.model(x).float(), dim=1)
    return f.cpu().numpy()
