"""Evaluation on the validation split: accuracy, loss, per-class accuracy, the confusion matrix."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from thresher.config import Recipe
from thresher.data.batch_transforms import normalize, to_float
from thresher.train.signals import ignore_stop_signals


@torch.no_grad()
def evaluate(
    model, dataset, r: Recipe, device, amp_dtype, n_classes: int, channels_last: bool = False
) -> dict | None:
    """Accuracy, loss, per-class accuracy and the confusion matrix on the validation split.

    The workers resize and crop in uint8; the batch is normalised on the device.
    """
    if len(dataset) == 0:
        return None
    modes = [(m, m.training) for m in model.modules()]  # a head-only phase keeps its own
    model.eval()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=r.batch_size,
        num_workers=r.workers,
        shuffle=False,
        pin_memory=device.type == "cuda",
        worker_init_fn=ignore_stop_signals,
    )
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    loss_sum = 0.0
    for images, y in loader:
        x = normalize(to_float(images.to(device, non_blocking=True)))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        pred = logits.argmax(dim=1)
        np.add.at(confusion, (y.cpu().numpy(), pred.cpu().numpy()), 1)
    for m, mode in modes:
        m.training = mode
    n = confusion.sum()
    per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    return {
        "accuracy": float(np.trace(confusion) / n),
        "loss": loss_sum / n,
        "per_class_accuracy": per_class.round(4).tolist(),
        "confusion": confusion.tolist(),
    }
