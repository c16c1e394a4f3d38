"""The torch Dataset over a manifest's arrays: decode like the scan, transform, return a tensor.

An item may be an index or (index, sample_seed): with a seed, the random augmentation of that
sample is a function of the seed alone, whatever worker draws it and however the run was
interrupted and resumed.
"""

from __future__ import annotations

import random
import warnings

import numpy as np
import torch

from thresher.config import ScanConfig


class ImageDataset(torch.utils.data.Dataset):
    """Images by path from numpy arrays; `transform` maps a PIL image to a tensor."""

    def __init__(self, paths: np.ndarray, targets: np.ndarray, transform, view_px: int = 256):
        self.paths, self.targets, self.transform = paths, targets, transform
        self.view_px = view_px  # decode JPEGs in draft mode to about this size, not full size
        self.max_pixels = ScanConfig().max_image_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, None)
        if seed is not None:
            torch.manual_seed(seed)
            random.seed(seed)
        image = self._load(index)
        return self.transform(image), int(self.targets[index])

    def _load(self, index: int):
        from thresher.scan.decode import DecodeIssue, decode

        for k in range(len(self.paths)):
            i = (index + k) % len(self.paths)
            path = self.paths[i].decode()
            try:
                with open(path, "rb") as f:
                    return decode(f.read(), self.view_px, self.max_pixels).view
            except (OSError, DecodeIssue) as e:
                # A file changed or vanished since the scan: a multi-day run must not die of
                # it. The next sample stands in, and the warning names the file.
                warnings.warn(f"cannot read {path} ({e}); using another sample", stacklevel=2)
        raise RuntimeError("no image of the manifest can be read")
