"""The training stream's batches of sample indices, epoch after epoch, as one unbroken stream.

A DataLoader iterated once per epoch stops feeding its workers at each epoch's end: a new
`iter()` sends the next epoch's indices only after the last batch is consumed, and the model
waits for the workers' first batches. `EpochBatches`, iterated once, runs on across the
boundaries, so the workers prefetch the next epoch while the current one's last batches train.

Each epoch is cut to whole batches (drop_last per epoch, as before): batches never straddle an
epoch, so a run and its resume draw the same batches. Because the loader draws batches ahead
of what the loop trains on, each batch's place, (epoch, samples of that epoch drawn after it),
goes into a FIFO as the batch is drawn; the loop takes one entry per batch it consumes (the
loader delivers batches in order) and so knows where the stream is for a checkpoint.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice


@dataclass(frozen=True)
class Place:
    """Where the stream is after a batch: the batch's epoch, the samples of it drawn so far."""

    epoch: int
    position: int


class EpochBatches:
    """Batches of a sampler's items from (epoch, position) on, one epoch after another.

    `sampler` is any Sampler with `set_epoch(epoch, start)` (BalancedSampler, or a setup's
    own). A start with less than a batch left in its epoch goes on to the next epoch. An epoch
    that starts at position 0 and holds no whole batch ends the stream, with `empty_epoch` set:
    the loop, which sees the end, raises (the error belongs in the main process, after the
    batches before it have trained).
    """

    def __init__(self, sampler, batch_size: int, epoch: int = 0, position: int = 0):
        self.sampler, self.batch_size = sampler, batch_size
        self.epoch, self.position = epoch, position
        self.places: deque[Place] = deque()  # one per batch drawn and not yet consumed
        self.empty_epoch: int | None = None

    def __iter__(self) -> Iterator[list]:
        epoch, start, b = self.epoch, self.position, self.batch_size
        while True:
            self.sampler.set_epoch(epoch, start)
            items, position, drawn = iter(self.sampler), start, 0
            while len(batch := list(islice(items, b))) == b:
                position += b
                drawn += 1
                self.places.append(Place(epoch, position))
                yield batch
            if drawn == 0 and start == 0:
                self.empty_epoch = epoch
                return
            epoch, start = epoch + 1, 0
