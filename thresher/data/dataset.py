"""The torch Dataset over a manifest's arrays: decode like the scan, transform, return a tensor.

An item may be an index, giving (image, target), or (index, sample_seed), giving a `Sample`
that carries the seed on: the random augmentation of that sample (the crop here, the rest on
the training device from the same seed) is a function of the seed alone, whatever worker
draws it and however the run was interrupted and resumed.
"""

from __future__ import annotations

import random
import warnings
from typing import NamedTuple

import numpy as np
import torch

from thresher.config import ScanConfig
from thresher.data.transforms import UserTransformError
from thresher.errors import ThresherError
from thresher.files import FileRefused, read_regular

# How many samples in a row may fail the user's transform before the run is stopped.
MAX_STAND_INS = 16


class Sample(NamedTuple):
    """One training sample; the DataLoader collates these into a Sample of batched tensors."""

    image: torch.Tensor  # uint8 (3, H, W): cropped and flipped, not yet rotated or jittered
    target: int
    seed: int  # its augmentation seed: the device-side transforms draw from it


class ImageDataset(torch.utils.data.Dataset):
    """Images by path from numpy arrays; `transform` maps a PIL image to a tensor."""

    def __init__(
        self, paths: np.ndarray, targets: np.ndarray, transform, view_px: int = 256, skipped=None
    ):
        self.paths, self.targets, self.transform = paths, targets, transform
        self.skipped = skipped  # a SkippedSamples: a raising user_transform skips, counted
        self.view_px = view_px  # decode JPEGs in draft mode to about this size, not full size
        self.max_pixels = ScanConfig().max_image_pixels
        self.max_bytes = ScanConfig().max_file_bytes

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, None)
        if seed is None:
            return self._transformed(index)
        return Sample(*self._seeded(index, seed), seed)

    def _seeded(self, index: int, seed: int):
        """The transformed sample with the worker's RNG streams seeded by the sample's seed."""
        # In the training process itself (workers=0) the streams that dropout and the user's
        # code draw from are put back afterwards: a run's weights do not depend on `workers`.
        inline = torch.utils.data.get_worker_info() is None
        if inline:
            saved = torch.get_rng_state(), random.getstate()
        # The CPU generator only: torch.manual_seed also queues a lazy CUDA seeding with a
        # stack trace, ~160 us a call on a CUDA build, which per sample was a measured share
        # of the loop's overhead. Transforms draw from the CPU generator and `random`.
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        try:
            return self._transformed(index)
        finally:
            if inline:
                torch.set_rng_state(saved[0])
                random.setstate(saved[1])

    def _transformed(self, index: int):
        """(tensor, target); when the user's transform raises, another sample stands in."""
        # Past a run of failures the transform is broken, not an image: say so here, since no
        # batch would ever complete for the skipped-samples guard to judge.
        # Stand-ins are drawn across the manifest (seeded by the index, so a resume draws the
        # same), not its next rows: a class-sorted manifest must not look all broken.
        draw = random.Random(index)
        tries = min(len(self.paths), MAX_STAND_INS)
        for k in range(tries):
            i = index if k == 0 else draw.randrange(len(self.paths))
            try:
                # The sample that stood in for an unreadable file brings its own label.
                view, j = self._load(i)
                return self.transform(view), int(self.targets[j])
            except UserTransformError as e:
                if self.skipped is None:
                    raise
                self.skipped.record(self.paths[i].decode(errors="replace"), str(e))
        first = self.skipped.first if self.skipped is not None else ""
        raise ThresherError(
            f"the user_transform raised on {tries} samples in a row: {first}. "
            "Fix the transform (or the files)"
        )

    def _load(self, index: int) -> tuple:
        """(decoded view, row it came from): the row is `index` unless that file is unreadable."""
        from thresher.images import DecodeIssue, decode

        for k in range(len(self.paths)):
            i = (index + k) % len(self.paths)
            path = self.paths[i].decode()
            try:
                # Regular files only, size checked first: a file replaced by a FIFO or a
                # device since the export can neither hang nor exhaust a worker.
                data = read_regular(path, self.max_bytes)
                return decode(data, self.view_px, self.max_pixels).view, i
            except (FileRefused, DecodeIssue) as e:
                # A file changed or vanished since the scan: a multi-day run must not die of
                # it. The next sample stands in, and the warning names the file.
                warnings.warn(f"cannot read {path} ({e}); using another sample", stacklevel=2)
        raise ThresherError("no image of the manifest can be read any more")
