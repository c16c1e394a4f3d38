"""A synthetic messy crawl with known ground truth, for `thresher demo` and for the tests.

`make_crawl` draws several object classes (circle, square, triangle, star, cross) on sharp
textured backgrounds, with the field report's garbage planted in known places: duplicates
(byte copies, re-encoded, resized, watermarked, cropped, re-saved as PNG), low-resolution and
upscaled-from-tiny images, blank ones, truncated / zero-byte / HTML-as-JPEG / bomb files, wrong
labels, class imbalance, unusual colour modes and symlinks. `truth.csv` records every plant.

`demo` makes the crawl, runs every stage that exists, and compares what they found with the truth.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from thresher.issue_model import DUPLICATE_KINDS

CLASSES = {"circle": 90, "square": 60, "triangle": 40, "star": 22, "cross": 12}  # imbalanced
TRUTH_FILE = "truth.csv"
CRAWL_DIR = "crawl"


@dataclass
class Truth:
    """What the generator planted in one file (one row of truth.csv)."""

    path: str  # relative to the crawl root
    folder_label: str
    true_label: str = ""  # the drawn class ('' for files with no drawn object)
    native_short: int = 0  # short side as saved (0 for unreadable files)
    low_res: bool = False  # drawn small (short side < 512)
    upscaled: bool = False  # drawn small, then enlarged to a large size
    blank: bool = False
    wrong_label: bool = False  # filed under another class's folder
    group: int = -1  # duplicate group (original and its copies share it)
    exact_copy: bool = False  # byte-identical to the group's original
    variant: str = ""  # in a group: original, copy, reencoded, resized, watermarked, cropped, png
    status: str = "ok"  # scan status expected: ok, corrupt, empty, not_image, oversized, ...


@dataclass
class _Gen:
    root: Path
    rng: np.random.Generator
    truths: list[Truth] = field(default_factory=list)
    counter: int = 0

    def name(self, label: str, ext: str) -> str:
        self.counter += 1
        return f"{label}/img_{self.counter:05d}{ext}"

    def save(self, im: Image.Image | bytes, rel: str, truth: Truth, **kw) -> Truth:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(im, bytes):
            path.write_bytes(im)
        else:
            fmt = "PNG" if rel.endswith(".png") else "GIF" if rel.endswith(".gif") else "JPEG"
            if fmt == "JPEG" and "quality" not in kw:
                kw["quality"] = int(self.rng.integers(80, 95))
            im.save(path, fmt, **kw)
            truth.native_short = min(im.size)
        truth.path = rel
        self.truths.append(truth)
        return truth


def draw_object(label: str, w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """One picture of `label`: the shape, large, on a sharp textured background."""
    base = rng.integers(40, 215, 3)
    # A smooth colour gradient (drawn small, enlarged) plus per-pixel noise (Pillow, in C):
    # the background is sharp at every scale, like a real photo's texture.
    sw, sh = max(2, w // 16), max(2, h // 16)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    grad = (xx / sw - 0.5)[..., None] * rng.integers(-60, 60, 3) + (yy / sh - 0.5)[..., None] * (
        rng.integers(-60, 60, 3)
    )
    bg = Image.fromarray(np.clip(base + grad, 0, 255).astype(np.uint8), "RGB").resize(
        (w, h), Image.Resampling.BILINEAR
    )
    noise = Image.fromarray(rng.integers(114, 143, (h, w), dtype=np.uint8), "L").convert("RGB")
    im = ImageChops.add(bg, noise, scale=1.0, offset=-128)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(6, 14))):  # small distractor dots give the scene detail
        x, y, r = rng.integers(0, w), rng.integers(0, h), rng.integers(2, max(3, w // 60))
        d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
    r = min(w, h) * rng.uniform(0.25, 0.4)
    colour = tuple(int(v) for v in (255 - base + rng.integers(-30, 30, 3)) % 256)
    rot = rng.uniform(0, 2 * math.pi)

    def poly(n, radii):
        return [
            (
                cx + radii[i % len(radii)] * math.cos(rot + 2 * math.pi * i / n),
                cy + radii[i % len(radii)] * math.sin(rot + 2 * math.pi * i / n),
            )
            for i in range(n)
        ]

    if label == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif label == "square":
        d.polygon(poly(4, [r]), fill=colour)
    elif label == "triangle":
        d.polygon(poly(3, [r]), fill=colour)
    elif label == "star":
        d.polygon(poly(10, [r, r * 0.4]), fill=colour)
    elif label == "cross":
        t = r * 0.3
        d.rectangle([cx - r, cy - t, cx + r, cy + t], fill=colour)
        d.rectangle([cx - t, cy - r, cx + t, cy + r], fill=colour)
    else:
        raise ValueError(label)
    return im


def make_crawl(out: Path | str, seed: int = 0, scale: float = 1.0) -> Path:
    """Write a messy crawl under OUT/crawl and its ground truth to OUT/truth.csv; return the root.

    `scale` multiplies the class counts (1.0 gives about 300 files).
    """
    out = Path(out)
    root = out / CRAWL_DIR
    g = _Gen(root, np.random.default_rng(seed))
    rng = g.rng
    labels = list(CLASSES)
    originals: list[tuple[Truth, Image.Image]] = []

    for label, n in CLASSES.items():
        for _ in range(max(1, round(n * scale))):
            kind = rng.random()
            folder = label
            wrong = rng.random() < 0.08
            if wrong:
                folder = str(rng.choice([c for c in labels if c != label]))
            t = Truth("", folder, true_label=label, wrong_label=wrong)
            if kind < 0.15:  # genuinely small
                w, h = (int(v) for v in rng.integers(150, 420, 2))
                im = draw_object(label, w, h, rng)
                t.low_res = True
            elif kind < 0.23:  # small, then blown up: a large file with little information
                w, h = (int(v) for v in rng.integers(110, 240, 2))
                f = rng.uniform(5, 9)
                im = draw_object(label, w, h, rng).resize(
                    (int(w * f), int(h * f)), Image.Resampling.BICUBIC
                )
                t.upscaled = True
            else:
                w, h = (int(v) for v in rng.integers(600, 1400, 2))
                im = draw_object(label, w, h, rng)
            g.save(im, g.name(folder, ".jpg"), t)
            if not (t.low_res or t.upscaled) and not wrong:
                originals.append((t, im))

    # Duplicates: the field report's burger, re-uploaded with changes.
    pick = rng.choice(len(originals), size=max(2, int(len(originals) * 0.12)), replace=False)
    for gid, i in enumerate(sorted(pick)):
        t0, im = originals[i]
        t0.group = gid
        t0.variant = "original"
        for k in rng.choice(6, size=int(rng.integers(1, 4)), replace=False):
            t = Truth(
                "", t0.folder_label, true_label=t0.true_label, group=gid, variant=_VARIANTS[k]
            )
            rel = g.name(t0.folder_label, ".png" if k == 5 else ".jpg")
            if k == 0:
                t.exact_copy = True
                g.save((root / t0.path).read_bytes(), rel, t)
                t.native_short = t0.native_short
            elif k == 1:
                g.save(im, rel, t, quality=55)
            elif k == 2:
                f = rng.uniform(0.6, 0.85)
                g.save(
                    im.resize((int(im.width * f), int(im.height * f)), Image.Resampling.LANCZOS),
                    rel,
                    t,
                )
            elif k == 3:
                g.save(_watermark(im, rng), rel, t)
            elif k == 4:
                c = 0.04
                g.save(
                    im.crop(
                        (
                            int(im.width * c),
                            int(im.height * c),
                            int(im.width * (1 - c)),
                            int(im.height * (1 - c)),
                        )
                    ),
                    rel,
                    t,
                )
            else:
                g.save(im, rel, t)
            t.low_res = 0 < t.native_short < 512

    # Blank and near-blank images.
    for _ in range(max(2, round(10 * scale))):
        folder = str(rng.choice(labels))
        w, h = (int(v) for v in rng.integers(600, 1200, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        arr = np.empty((h, w, 3), np.uint8)
        arr[:] = colour
        if rng.random() < 0.5:
            arr = np.clip(arr + rng.integers(-1, 2, (h, w, 1)), 0, 255).astype(np.uint8)
        g.save(Image.fromarray(arr), g.name(folder, ".jpg"), Truth("", folder, blank=True))

    _plant_bad_files(g, labels)
    _plant_modes(g, labels)
    _plant_links(g)
    (root / "README.txt").write_text("crawl notes: not an image, skipped by the scan\n")
    _write_truth(out / TRUTH_FILE, g.truths)
    return root


_VARIANTS = ("copy", "reencoded", "resized", "watermarked", "cropped", "png")


def _watermark(im: Image.Image, rng) -> Image.Image:
    out = im.copy().convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    y = int(out.height * rng.uniform(0.75, 0.9))
    d.rectangle([0, y, out.width, y + out.height // 12], fill=(255, 255, 255, 110))
    for x in range(10, out.width, 90):
        d.text((x, y + 5), "(c) stockpix", fill=(20, 20, 20, 200))
    return Image.alpha_composite(out, layer).convert("RGB")


def _plant_bad_files(g: _Gen, labels: list[str]) -> None:
    rng = g.rng
    for _ in range(4):  # truncated JPEGs
        folder = str(rng.choice(labels))
        b = io.BytesIO()
        draw_object(folder, 800, 600, rng).save(b, "JPEG", quality=90)
        data = b.getvalue()
        g.save(
            data[: int(len(data) * 0.6)],
            g.name(folder, ".jpg"),
            Truth("", folder, status="corrupt"),
        )
    for _ in range(2):
        folder = str(rng.choice(labels))
        g.save(b"", g.name(folder, ".jpg"), Truth("", folder, status="empty"))
    for _ in range(2):
        folder = str(rng.choice(labels))
        html = b"<!DOCTYPE html><html><head><title>403 Forbidden</title></head></html>\n"
        g.save(html, g.name(folder, ".jpg"), Truth("", folder, status="not_image"))
    folder = str(rng.choice(labels))
    g.save(rng.bytes(5000), g.name(folder, ".png"), Truth("", folder, status="not_image"))
    # A decompression bomb: 10000 x 10000 pixels in a few kilobytes of PNG.
    folder = str(rng.choice(labels))
    b = io.BytesIO()
    Image.new("1", (10000, 10000)).save(b, "PNG")
    g.save(b.getvalue(), g.name(folder, ".png"), Truth("", folder, status="oversized"))


def _plant_modes(g: _Gen, labels: list[str]) -> None:
    """Clean images in awkward colour modes, which the scan must read correctly."""
    rng = g.rng
    for mode in ("RGBA", "P", "L", "CMYK", "I;16", "exif"):
        label = str(rng.choice(labels))
        im = draw_object(label, 700, 800, rng)
        t = Truth("", label, true_label=label)
        if mode == "RGBA":
            im = im.convert("RGBA")
            im.putalpha(Image.new("L", im.size, 200))
            g.save(im, g.name(label, ".png"), t)
        elif mode == "P":
            g.save(im.convert("P", palette=Image.Palette.ADAPTIVE), g.name(label, ".gif"), t)
        elif mode == "L":
            g.save(im.convert("L"), g.name(label, ".jpg"), t)
        elif mode == "CMYK":
            g.save(im.convert("CMYK"), g.name(label, ".jpg"), t)
        elif mode == "I;16":
            a = (np.asarray(im.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
            g.save(Image.fromarray(a), g.name(label, ".png"), t)
        else:
            exif = Image.Exif()
            exif[0x0112] = 6  # stored sideways: displayed rotated by 90 degrees
            g.save(im, g.name(label, ".jpg"), t, exif=exif)


def _plant_links(g: _Gen) -> None:
    target = next(t for t in g.truths if t.status == "ok" and t.true_label and not t.wrong_label)
    alias = Path(target.path).with_name("alias_of_" + Path(target.path).name).as_posix()
    os.symlink(os.path.relpath(g.root / target.path, (g.root / alias).parent), g.root / alias)
    g.truths.append(
        Truth(
            alias,
            target.folder_label,
            true_label=target.true_label,
            native_short=target.native_short,
            status="alias",
        )
    )
    broken = f"{target.folder_label}/dead_link.jpg"
    os.symlink("no_such_file.jpg", g.root / broken)
    g.truths.append(Truth(broken, target.folder_label, status="broken_symlink"))


def _write_truth(path: Path, truths: list[Truth]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(asdict(truths[0])))
        w.writeheader()
        for t in truths:
            w.writerow(asdict(t))


def read_truth(out: Path | str) -> list[Truth]:
    """The ground truth written by make_crawl."""
    types = {k: type(v) for k, v in asdict(Truth("", "")).items()}
    with open(Path(out) / TRUTH_FILE) as f:
        return [
            Truth(**{k: (v == "True") if types[k] is bool else types[k](v) for k, v in row.items()})
            for row in csv.DictReader(f)
        ]


# -- the demo -------------------------------------------------------------------------------------
@dataclass
class Finding:
    """One line of the demo's comparison: what was planted, what was found, how many agree."""

    check: str
    planted: int
    found: int
    agree: int
    note: str = ""


def demo(
    out: Path | str = "demo-crawl",
    *,
    workers: int | None = None,
    embedder: str | None = None,
    weights: Path | str | None = None,
    progress: bool = True,
    log=print,
) -> tuple[object, object, list[Finding]]:
    """Generate the synthetic crawl in OUT, scan and clean it in OUT/workspace, compare.

    Returns the scan summary, the clean summary and the findings table. Reuses OUT's crawl if
    it already exists (the scan is then incremental).
    """
    from thresher.catalog import Catalog
    from thresher.clean.findings import clean
    from thresher.clean.report import html_report
    from thresher.config import DEFAULT_EMBEDDER
    from thresher.scan.runner import scan

    out = Path(out)
    root = out / CRAWL_DIR
    if not (out / TRUTH_FILE).exists():
        log(f"generating a synthetic messy crawl in {root} ...")
        make_crawl(out)
    summary = scan(
        root,
        out / "workspace",
        workers=workers,
        embedder=embedder or DEFAULT_EMBEDDER,
        weights=weights,
        progress=progress,
        log=log,
    )
    cleaned = clean(out / "workspace", log=log)
    html_report(out / "workspace")  # workspace/report.html, as `thresher clean` writes it
    with Catalog(out / "workspace", create=False) as cat:
        findings = compare_with_truth(cat, read_truth(out))
    return summary, cleaned, findings


def compare_with_truth(cat, truths: list[Truth]) -> list[Finding]:
    """What scan and clean found (the catalog's issue table), against what was planted."""
    flagged: dict[str, set] = {}
    copies_found, kept_found = set(), set()
    for x in cat.issues():
        flagged.setdefault(x.issue, set()).add(x.path)
        if x.issue in DUPLICATE_KINDS:
            (kept_found if x.keep else copies_found).add(x.path)
    c = cat.columns(["path", "status", "has_embedding"])
    rows: list[Finding] = []

    def add(check, planted: set, found: set, note=""):
        rows.append(Finding(check, len(planted), len(found), len(planted & found), note))

    for status in ("corrupt", "empty", "not_image", "oversized", "broken_symlink"):
        add(status, {t.path for t in truths if t.status == status}, flagged.get(status, set()))
    add(
        "alias (symlink, not scanned twice)",
        {t.path for t in truths if t.status == "alias"},
        set(c["path"][c["status"] == "alias"]),
    )
    add(
        "low_resolution",
        {t.path for t in truths if t.low_res},
        flagged.get("low_resolution", set()),
    )
    add(
        "upscaled",
        {t.path for t in truths if t.upscaled},
        flagged.get("upscaled", set()),
        "effective resolution from the blur estimate",
    )
    add("blank", {t.path for t in truths if t.blank}, flagged.get("blank", set()))
    planted_groups = {t.path for t in truths if t.group >= 0}
    add("duplicates (group members)", planted_groups, copies_found | kept_found)
    add(
        "kept copy: the original or its lossless twin",
        kept_found & planted_groups,
        kept_found & {t.path for t in truths if t.variant in ("original", "png")},
    )
    add(
        "label_error",
        {t.path for t in truths if t.wrong_label},
        flagged.get("label_error", set()),
        "" if flagged.get("label_error") else "needs embeddings: pass --weights",
    )
    ok = c["status"] == "ok"
    n_emb = int(np.nansum(c["has_embedding"]))
    rows.append(
        Finding(
            "embedded images",
            int(ok.sum()),
            n_emb,
            n_emb,
            "" if n_emb else "no backbone weights: pass --weights",
        )
    )
    return rows
