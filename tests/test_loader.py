"""The training stream: uint8 batches with their seeds, workers that live through the epochs,
a resume that starts mid-epoch on the same batches."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from thresher.config import Recipe
from thresher.train.distributed import Ranks


class _NotingPids:
    """The worker transform, noting which process ran it (the workers are forked)."""

    def __init__(self, transform, log: Path):
        self.transform, self.log = transform, log

    def __call__(self, image):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return self.transform(image)


def _parts(tiny_data, **over):
    from thresher.train.setup import setup

    r = Recipe(model="resnet10t", image_size=32, batch_size=8, grad_accum=1, total_steps=50,
               warmup_steps=0, **over)  # fmt: skip
    return setup(r, tiny_data, Ranks(), torch.device("cpu"), lambda m: None)


def test_the_stream_keeps_its_workers_across_epochs_and_resumes_mid_epoch(tiny_data, tmp_path):
    from thresher.train.loop import _batches
    from thresher.train.state import RunState

    p = _parts(tiny_data, workers=2)
    p.train_ds.transform = _NotingPids(p.train_ds.transform, tmp_path / "pids")
    per_epoch = len(p.sampler) // 8
    state = RunState(p.model, p.opt, p.scaler)
    stream = _batches(p, state)
    whole = [next(stream) for _ in range(2 * per_epoch + 1)]  # into the third epoch
    stream.close()
    assert state.epoch == 2 and state.position == 8
    b = whole[0]  # on a CPU the workers also ran the batch transforms
    assert b.inputs.dtype == torch.float32 and b.inputs.shape == (8, 3, 32, 32)
    assert b.seed.dtype == torch.int64 and len(set(b.seed.tolist())) == 8
    pids = set((tmp_path / "pids").read_text().split())
    assert len(pids) == 2 and str(os.getpid()) not in pids  # two workers for three epochs

    # A resume at the second batch of the second epoch draws the same batches from there.
    (tmp_path / "pids").unlink()
    resumed = RunState(p.model, p.opt, p.scaler, epoch=1, position=8)
    stream = _batches(p, resumed)
    again = [next(stream) for _ in range(per_epoch)]
    stream.close()
    for a, b in zip(whole[per_epoch + 1 :], again, strict=False):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.seed, b.seed)
        assert torch.equal(a.target, b.target)
    assert len(set((tmp_path / "pids").read_text().split())) == 2


def test_device_inputs_augment_each_sample_by_its_seed(tiny_data):
    from thresher.data.batch_transforms import BatchAugment

    p = _parts(tiny_data, workers=0, rotation=30, color_jitter=0.2)
    assert isinstance(p.augment, BatchAugment) and not p.channels_last  # auto: off on a CPU
    items = [(i, 1000 + i) for i in range(4)]
    batch = torch.utils.data.default_collate([p.train_ds[it] for it in items])
    assert batch.image.dtype == torch.uint8  # what travels to a GPU
    x, y = p.inputs(batch)
    assert x.dtype == torch.float32 and x.shape == (4, 3, 32, 32)
    one, _ = p.inputs(torch.utils.data.default_collate([p.train_ds[items[2]]]))
    assert torch.equal(one[0], x[2])  # a sample's pixels do not depend on its batch
    # On a CPU the loader's collate runs the same transforms (in the workers): same numbers.
    done = p.collate([p.train_ds[it] for it in items])
    assert type(done).__name__ == "AugmentedBatch"
    assert torch.equal(p.inputs(done)[0], x)
    forced = _parts(tiny_data, workers=0, channels_last=True)
    assert forced.channels_last
    conv = next(m for m in forced.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x, _ = forced.inputs(batch)
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_channels_last_auto_is_on_for_conv_nets_on_cuda_only_not_for_a_vit():
    import timm

    from thresher.train.model import use_channels_last

    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # only compared, never used
    conv = timm.create_model("resnet10t", num_classes=3)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=3)  # one conv: the patch embed
    assert use_channels_last("auto", cuda, conv) and not use_channels_last("auto", cpu, conv)
    assert not use_channels_last("auto", cuda, vit)
    assert use_channels_last(True, cpu, vit) and not use_channels_last(False, cuda, conv)


class _Spy:
    """The run's sampler, noting how many batches the loop had consumed when each epoch's
    first batch was drawn (the loader draws in the main process)."""

    def __init__(self, sampler, batch_size: int):
        self.sampler, self.batch_size = sampler, batch_size
        self.consumed, self.drawn_at = 0, {}

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.sampler.set_epoch(epoch, start)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for i, item in enumerate(self.sampler):
            if i == self.batch_size - 1:
                self.drawn_at.setdefault(self.sampler.epoch, self.consumed)
            yield item


def test_the_workers_draw_the_next_epoch_while_this_one_trains(tiny_data):
    from thresher.train.loop import _batches
    from thresher.train.state import RunState

    p = _parts(tiny_data, workers=2)
    per_epoch = len(p.sampler) // 8
    p.sampler = spy = _Spy(p.sampler, 8)
    stream = _batches(p, RunState(p.model, p.opt, p.scaler))
    for _ in range(per_epoch + 1):
        next(stream)
        spy.consumed += 1
    stream.close()
    # Before, the second epoch's indices went out only after the first epoch was all consumed:
    # the model waited for the workers at every boundary.
    assert spy.drawn_at[0] == 0 and spy.drawn_at[1] < per_epoch


def _per_epoch_places(sampler, epoch: int, position: int, n: int, b: int = 8):
    """(epoch, position, seeds) of the next n batches, as the loop did it an epoch at a time."""
    out = []
    while len(out) < n:
        sampler.set_epoch(epoch)
        seeds = [s for _, s in sampler]
        while position + b <= len(seeds) and len(out) < n:
            position += b
            out.append((epoch, position, seeds[position - b : position]))
        if position + b > len(seeds):
            epoch, position = epoch + 1, 0
    return out


def test_the_loop_sees_each_batch_where_the_per_epoch_stream_put_it(tiny_data):
    from thresher.data.balance import epoch_indices
    from thresher.train.loop import _batches
    from thresher.train.state import RunState

    p = _parts(tiny_data, workers=0)
    lengths = [len(epoch_indices(p.sampler.weights, e, 0)) for e in range(3)]
    assert lengths[0] % 8 and lengths[1] % 8  # each epoch's end drops a partial batch
    starts = [(0, 0), (1, 8), (1, lengths[1] - 3)]  # across two ends, mid-epoch, 3 left
    for (epoch, position), n in zip(starts, [2 * lengths[0] // 8 + 2, 4, 2], strict=True):
        want = _per_epoch_places(p.sampler, epoch, position, n)
        state = RunState(p.model, p.opt, p.scaler, epoch=epoch, position=position)
        stream = _batches(p, state)
        got = []
        for _ in range(n):
            b = next(stream)
            got.append((state.epoch, state.position, b.seed.tolist()))
        stream.close()
        assert got == want
        assert p.sampler.epoch == state.epoch  # set back to the loop's place (the summary)
