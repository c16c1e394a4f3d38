"""Real development data for the clean stage, made from Debian packages (nothing downloaded).

    apt-get install mate-backgrounds gnome-backgrounds plasma-workspace-wallpapers \
        openclipart-png fonts-noto-color-emoji dataset-fashion-mnist
    .venv/bin/python bench/clean_data.py   # bench/clean_real.py calls it too

`build(out)` writes `out/crawl/<label>/<file>` and `out/truth.csv`, deterministically (seed 0),
once: a second call finds `truth.csv` and returns. The mix follows issue #12's field report:
- photos: every distinct wallpaper of the three wallpaper packages, sized to 1280 px on the
  long side (macro shots with shallow depth of field, fog, night, low contrast among them);
  upscaled fakes of most of them (shrunk x3..x10, blown up with nearest, bilinear, bicubic or
  Lanczos), real low-resolution copies, and copies (re-encoded, resized, cropped, watermarked);
- clip art from openclipart-png in six classes, drawn on white at 576 px, with planted label
  errors (10%), one drawing copied 30 times (8 byte-identical), a few more copied 3 times,
  and colour variants (hue turned) that are NOT copies;
- emoji faces (Noto Color Emoji) on white: expression variants of one face, NOT copies;
- near-uniform blank images (the only true blanks).
Truth columns: path, label, true_label, kind, group (copies of one picture share it; -1 none).
"""

from __future__ import annotations

import csv
import hashlib
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Image.MAX_IMAGE_PIXELS = None  # the wallpapers are trusted package files, some above 178 MP
WALLPAPER_DIRS = ("/usr/share/backgrounds", "/usr/share/wallpapers")
CLIPART = Path("/usr/share/openclipart/png")
CLIP_CLASSES = ("animals", "food", "people", "plants", "transportation", "buildings")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
PHOTO_LONG = 1280
CLIP_SIDE = 576
FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
FACTORS = (3, 4, 5, 6, 8, 10)
OVERLAY_BACKGROUND = (38, 52, 84, 255)  # wallpapers that are alpha overlays go on dark blue
TRUTH_FIELDS = ("path", "label", "true_label", "kind", "group")


def wallpapers() -> list[Path]:
    """One file per distinct wallpaper (largest), screenshots and dark variants left out."""
    best: dict[str, Path] = {}
    for d in WALLPAPER_DIRS:
        for p in sorted(Path(d).rglob("*")):
            if p.suffix.lower() not in (".jpg", ".jpeg", ".png") or "screenshot" in p.name:
                continue
            if "images_dark" in p.parts:
                continue
            # plasma: <Name>/contents/images/WxH.ext; mate/gnome: <name>[_WxH].ext
            key = p.parts[-4] if "contents" in p.parts else p.stem.split("_")[0].split("-")[0]
            key = key.lower()
            if key not in best or p.stat().st_size > best[key].stat().st_size:
                best[key] = p
    return [best[k] for k in sorted(best)]


def _fit(im: Image.Image, long_side: int) -> Image.Image:
    w, h = im.size
    s = long_side / max(w, h)
    return im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)


def _jpeg(im: Image.Image, q: int) -> bytes:
    b = io.BytesIO()
    im.convert("RGB").save(b, "JPEG", quality=q)
    return b.getvalue()


def _png(im: Image.Image) -> bytes:
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


def watermark(im: Image.Image, text: str = "(c) stockpix.example") -> Image.Image:
    """Sharp semi-opaque text across the lower part, as stock sites stamp their previews."""
    out = im.convert("RGB").copy()
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    size = max(14, out.size[0] // 14)
    try:
        font = ImageFont.truetype("DejaVuSans-Bold.ttf", size)
    except OSError:
        font = ImageFont.load_default(size)
    w, h = out.size
    d.text((w // 12, int(h * 0.62)), text, font=font, fill=(255, 255, 255, 170))
    d.text((w // 12 + 2, int(h * 0.62) + 2), text, font=font, fill=(0, 0, 0, 90))
    return Image.alpha_composite(out.convert("RGBA"), layer).convert("RGB")


def crop(im: Image.Image, share: float) -> Image.Image:
    w, h = im.size
    cw, ch = round(w * share), round(h * share)
    return im.crop(((w - cw) // 2, (h - ch) // 3, (w - cw) // 2 + cw, (h - ch) // 3 + ch))


def on_white(path: Path, side: int = CLIP_SIDE) -> Image.Image | None:
    """A clip-art PNG composited on white, fitted into a side x side canvas (only shrunk)."""
    im = Image.open(path)
    if max(im.size) < side - 36 or max(im.size) > 8000:
        return None
    im = im.convert("RGBA")
    s = (side - 36) / max(im.size)
    im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.LANCZOS)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    canvas.alpha_composite(im, ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
    return canvas.convert("RGB")


def hue_turn(im: Image.Image, turn: int) -> Image.Image:
    """The same drawing in other colours: hue turned by `turn`/255 of the circle."""
    hsv = np.asarray(im.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + turn) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def emoji_faces(n: int) -> list[Image.Image]:
    """Smiley faces (U+1F600...) on white at CLIP_SIDE px: one face, many expressions."""
    font = ImageFont.truetype(str(EMOJI_FONT), 109)
    out = []
    for cp in range(0x1F600, 0x1F600 + n):
        tile = Image.new("RGBA", (136, 128), (255, 255, 255, 255))
        ImageDraw.Draw(tile).text((0, 0), chr(cp), font=font, embedded_color=True)
        canvas = Image.new("RGB", (CLIP_SIDE, CLIP_SIDE), (255, 255, 255))
        # the bitmap font has one size (109 px): paste it as drawn, no blow-up
        canvas.paste(tile.convert("RGB"), ((CLIP_SIDE - 136) // 2, (CLIP_SIDE - 128) // 2))
        out.append(canvas)
    return out


class _Writer:
    def __init__(self, root: Path):
        self.root = root
        self.rows: list[dict] = []

    def put(self, data: bytes, label, name, true_label, kind, group=-1) -> None:
        rel = f"{label}/{name}"
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        self.rows.append(
            {"path": rel, "label": label, "true_label": true_label, "kind": kind, "group": group}
        )


def build(out: Path | str, clip_per_class: int = 40, seed: int = 0) -> Path:
    """Make the crawl and its truth under `out` (once); return `out`."""
    out = Path(out)
    if (out / "truth.csv").exists():
        return out
    rng = np.random.default_rng(seed)
    wr = _Writer(out / "crawl")
    group = 0

    # -- photos --------------------------------------------------------------------------------
    photos = []
    for p in wallpapers():
        im = Image.open(p)
        if im.mode in ("RGBA", "LA", "P"):  # overlays drawn in alpha: put them on a desktop
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, OVERLAY_BACKGROUND)
            im = Image.alpha_composite(bg, im)
        im = _fit(im.convert("RGB"), PHOTO_LONG)
        if min(im.size) < 600:
            continue
        photos.append((p, im))
    for k, (p, im) in enumerate(photos):
        name = f"{p.parent.parent.parent.name if 'contents' in p.parts else p.stem}".lower()
        name = "".join(ch if ch.isalnum() else "_" for ch in name)
        wr.put(_jpeg(im, 92), "photos", f"{name}.jpg", "photos", "genuine", -1)
        photos[k] = (name, im)
    n_ph = len(photos)
    order = rng.permutation(n_ph)
    # Every derivative of a photo (fake, small, altered copy) is a copy of it: one group each.
    photo_group = {}
    for k in order[: int(0.8 * n_ph)]:
        photo_group[k] = group
        group += 1
    for row, (k, _) in zip(wr.rows[-n_ph:], enumerate(photos), strict=True):
        row["group"] = photo_group.get(k, -1)
    for j, k in enumerate(order[: int(0.8 * n_ph)]):  # fakes
        name, im = photos[k]
        f = FACTORS[j % len(FACTORS)]
        filt = list(FILTERS)[(j // len(FACTORS)) % len(FILTERS)]
        small = im.resize((max(1, im.size[0] // f), max(1, im.size[1] // f)), Image.LANCZOS)
        fake = small.resize(im.size, FILTERS[filt])
        wr.put(_jpeg(fake, 90), "photos", f"{name}_x{f}_{filt}.jpg", "photos", "upscaled", int(k))
    for k in order[int(0.5 * n_ph) : int(0.75 * n_ph)]:  # real low resolution
        name, im = photos[k]
        small = _jpeg(_fit(im, 400), 88)
        wr.put(small, "photos", f"{name}_small.jpg", "photos", "low_resolution", int(k))
    for k in order[: int(0.3 * n_ph)]:  # copies of a photo: the original is group's clean copy
        name, im = photos[k]
        g = int(k)
        wr.put(_jpeg(im, 55), "photos", f"{name}_q55.jpg", "photos", "copy", g)
        wr.put(_jpeg(_fit(im, 1024), 85), "photos", f"{name}_1024.jpg", "photos", "copy", g)
        wr.put(_jpeg(crop(im, 0.85), 90), "photos", f"{name}_crop.jpg", "photos", "copy", g)
        wr.put(_jpeg(watermark(im), 90), "photos", f"{name}_wm.jpg", "photos", "copy", g)
    for row in wr.rows:  # photo index -> its group id
        if row["label"] == "photos" and row["kind"] != "genuine":
            row["group"] = photo_group[row["group"]]

    # -- blanks: near-uniform everywhere --------------------------------------------------------
    for k in range(12):
        colour = rng.integers(0, 256, 3)
        a = np.broadcast_to(colour, (600, 800, 3)).astype(np.float32)
        a = a + rng.normal(0, [0.5, 1.5, 3.0][k % 3], a.shape)
        if k % 4 == 3:  # a faint gradient
            a = a + np.linspace(-4, 4, 800)[None, :, None]
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        data = _jpeg(im, 90) if k % 2 else _png(im)
        wr.put(data, "photos", f"blank_{k:02d}.{'jpg' if k % 2 else 'png'}", "photos", "blank")

    # -- clip art -------------------------------------------------------------------------------
    drawings: list[tuple[str, str, Image.Image]] = []
    seen: set[str] = set()
    for cls in CLIP_CLASSES:
        files = sorted((CLIPART / cls).rglob("*.png"))
        picked = []
        for i in rng.permutation(len(files)):
            im = on_white(files[i])
            if im is None:
                continue
            # openclipart files one drawing under several names and folders: the truth
            # must not call two copies of one picture different pictures
            digest = hashlib.sha1(np.asarray(im.resize((64, 64))).tobytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                picked.append((cls, files[i].stem[:40], im))
            if len(picked) == clip_per_class:
                break
        drawings += picked
    n_dr = len(drawings)
    wrong = set(rng.choice(n_dr, n_dr // 10, replace=False).tolist())
    order = rng.permutation(n_dr)
    many, few = order[0], order[1:11]
    # Colour variants only of drawings with colour (turning a grey drawing's hue changes nothing).
    colourful = [
        k for k in order[11:] if np.asarray(drawings[k][2].convert("HSV"))[..., 1].mean() > 25
    ]
    variants = colourful[:10]
    for k, (cls, stem, im) in enumerate(drawings):
        label = cls
        kind = "genuine"
        if k in wrong:
            others = [c for c in CLIP_CLASSES if c != cls]
            label = others[int(rng.integers(len(others)))]
            kind = "label_error"
        g = -1
        if k == many or k in few:
            g = group
            group += 1
        data = _png(im)
        wr.put(data, label, f"{stem}.png", cls, kind, g)
        if k == many:  # one picture copied 30 times: 8 byte-identical, the rest altered
            for c in range(30):
                if c < 8:
                    d = data
                elif c < 16:
                    d = _jpeg(im, int(40 + 6 * (c - 8)))
                elif c < 22:
                    d = _jpeg(_fit(im, 520 + 30 * (c - 16)), 85)
                elif c < 26:
                    d = _jpeg(watermark(im, f"clipart-{c}.example"), 88)
                else:
                    d = _png(_fit(crop(im, 0.9), CLIP_SIDE))
                ext = "png" if c < 8 or c >= 26 else "jpg"
                wr.put(d, label, f"{stem}_copy{c:02d}.{ext}", cls, "copy", g)
        elif k in few:
            wr.put(_jpeg(im, 70), label, f"{stem}_q70.jpg", cls, "copy", g)
            wr.put(_jpeg(watermark(im), 90), label, f"{stem}_wm.jpg", cls, "copy", g)
            wr.put(_jpeg(_fit(im, 540), 88), label, f"{stem}_540.jpg", cls, "copy", g)
        elif k in variants:  # other colours: a different picture, not a copy
            for t in (85, 170):
                wr.put(_png(hue_turn(im, t)), label, f"{stem}_hue{t}.png", cls, "variant")

    # -- emoji faces: expression variants, not copies -----------------------------------------
    for k, im in enumerate(emoji_faces(30)):
        wr.put(_png(im), "faces", f"face_{k:02d}.png", "faces", "variant")

    with open(out / "truth.csv.tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=TRUTH_FIELDS)
        w.writeheader()
        w.writerows(wr.rows)
    (out / "truth.csv.tmp").rename(out / "truth.csv")
    return out


def build_testset(out: Path | str, per_class: int = 25, seed: int = 1) -> Path:
    """Clip art of the crawl's classes that never appears in it: `out/test/<class>/<file>`."""
    out = Path(out)
    test = out / "test"
    if (test / ".done").exists():
        return test
    seen = set()
    for r in read_truth(out):
        if r["true_label"] in CLIP_CLASSES and r["kind"] in ("genuine", "label_error"):
            im = Image.open(out / "crawl" / r["path"]).convert("RGB")
            seen.add(hashlib.sha1(np.asarray(im.resize((64, 64))).tobytes()).hexdigest())
    rng = np.random.default_rng(seed)
    for cls in CLIP_CLASSES:
        files = sorted((CLIPART / cls).rglob("*.png"))
        taken = 0
        for i in rng.permutation(len(files)):
            im = on_white(files[i])
            if im is None:
                continue
            digest = hashlib.sha1(np.asarray(im.resize((64, 64))).tobytes()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            (test / cls).mkdir(parents=True, exist_ok=True)
            im.save(test / cls / f"{files[i].stem[:40]}.png")
            taken += 1
            if taken == per_class:
                break
    (test / ".done").write_text("")
    return test


def read_truth(out: Path | str) -> list[dict]:
    """The truth rows of a built crawl (group as int)."""
    with open(Path(out) / "truth.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["group"] = int(r["group"])
    return rows


if __name__ == "__main__":
    d = build(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out" / "clean_real")
    rows = read_truth(d)
    from collections import Counter

    print(d, len(rows), Counter(r["kind"] for r in rows))
