"""Importable pieces the guard tests name in recipes as 'module:callable'."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from thresher.guard.thermal import ScriptedSensor

_leaked: list[bytes] = []
_last = [None]


def poison(image):
    """NaN pixels for the one magenta image of the poisoned set; others pass through."""
    a = np.asarray(image, dtype=np.float32)
    r, g, b = a[..., 0].mean(), a[..., 1].mean(), a[..., 2].mean()
    if r > 150 and b > 150 and g < 90:
        return torch.full((3, *a.shape[:2]), float("nan"))
    return image


def leak_3mb_per_s(image):
    """A transform that leaks 3 MB per second of wall time, however often it is called."""
    now = time.monotonic()
    if _last[0] is not None:
        _leaked.append(b"x" * int(3 * 2**20 * (now - _last[0])))
    _last[0] = now
    time.sleep(0.002)  # a realistic per-image cost, so the leak is not all in one burst
    return image


def hot_sensor():
    """A GPU that runs hot once, then cools: 70, 90 (pause), 86, 79 (resume), then 70."""
    return ScriptedSensor([70, 90, 86, 79, 70])


def colour_set(root: Path, poison_one: bool = False, wrong_val: bool = False) -> Path:
    """4 colour classes of 40 px PNGs; optionally one magenta image (the poison transform turns
    it into NaN), or validation labels that are all wrong (a run that can only overfit)."""
    colours = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200),
               "gold": (220, 190, 40)}  # fmt: skip
    rng = np.random.default_rng(0)
    rows = []
    names = list(colours)
    for k, (label, c) in enumerate(colours.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(24):
            px = np.clip(np.array(c) + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
            p = root / label / f"{i}.png"
            Image.fromarray(px).save(p)
            val = i < 4
            shown = names[(k + 1) % 4] if (val and wrong_val) else label
            rows.append((str(p), shown, "val" if val else "train"))
    if poison_one:
        p = root / "red" / "magenta.png"
        Image.new("RGB", (40, 40), (255, 0, 255)).save(p)
        rows.append((str(p), "red", "train"))
    cols = list(zip(*rows, strict=True))
    pq.write_table(pa.table({"path": cols[0], "label": cols[1], "split": cols[2]}),
                   root / "manifest.parquet")  # fmt: skip
    return root


def long_epochs(root: Path, times: int) -> Path:
    """The same set with each training row listed `times` times: epochs long enough that a
    DataLoader worker (one per epoch) lives for minutes, as on a real dataset."""
    t = pq.read_table(root / "manifest.parquet").to_pydict()
    train = [i for i, s in enumerate(t["split"]) if s == "train"] * times
    val = [i for i, s in enumerate(t["split"]) if s == "val"]
    out = root / f"x{times}"
    out.mkdir(exist_ok=True)
    pq.write_table(pa.table({k: [v[i] for i in train + val] for k, v in t.items()}),
                   out / "manifest.parquet")  # fmt: skip
    return out


def refuse_magenta(image):
    """A user transform that raises on the one magenta image of the poisoned set."""
    a = np.asarray(image, dtype=np.float32)
    if a[..., 0].mean() > 150 and a[..., 2].mean() > 150 and a[..., 1].mean() < 90:
        raise ValueError("cannot handle magenta")
    return image


def refuse_red(image):
    """A user transform that raises on every red image: a quarter of the set, a broken one."""
    a = np.asarray(image, dtype=np.float32)
    if a[..., 0].mean() > 150 and a[..., 1].mean() < 90 and a[..., 2].mean() < 90:
        raise ValueError("cannot handle red")
    return image


def refuse_all(image):
    """A user transform that is broken: it raises on every image."""
    raise ValueError("cannot handle anything")
