"""The failures issue #12 measured on real images, each as a small generated case.

A 25-copy group, a watermarked copy against its original, a sharp subject on a blurred
background, a nearest-neighbour blow-up, colour variants that are not copies, a review queue
no single threshold floods, and export's warning for a group left with no copy.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from thresher.catalog import Catalog
from thresher.clean import duplicates as dup
from thresher.clean import quality_rules as qr
from thresher.clean.findings import detector_inputs, find_issues
from thresher.clean.review_queue import ranked_queue
from thresher.config import CleanThresholds
from thresher.export import orphaned_groups
from thresher.images import decode
from thresher.scan import quality
from thresher.scan.runner import scan

TH = CleanThresholds()


def texture(w: int, h: int, seed: int) -> Image.Image:
    """A photo-like RGB texture: detail at every scale, strongest at the coarse ones."""
    rng = np.random.default_rng(seed)
    a = np.zeros((h, w, 3), np.float32)
    for scale, gain in ((1, 0.5), (4, 1.0), (16, 2.0), (64, 3.0)):
        small = rng.normal(0, 1, (h // scale + 1, w // scale + 1, 3)).astype(np.float32)
        noise = Image.fromarray(((small * 40) + 128).clip(0, 255).astype(np.uint8))
        up = np.asarray(noise.resize((w, h), Image.Resampling.BICUBIC), np.float32)
        a += (up - 128) * gain
    return Image.fromarray((a / 2 + 128).clip(0, 255).astype(np.uint8))


def _eff(im: Image.Image) -> tuple[int, int]:
    """(short side, effective short side) as the scan measures them, through a JPEG."""
    import io

    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92)
    d = decode(buf.getvalue(), 512, 89_478_485)
    short = min(d.width, d.height)
    return short, quality.effective_short_side(d.view, short)[1]


def _upscaled(short: int, eff: int) -> bool:
    r = qr.upscaled(
        np.array([short * 16 / 9.0]),
        np.array([float(short)]),
        np.array([eff]),
        np.ones(1, bool),
        TH,
    )
    return bool(r.is_issue[0])


def test_a_sharp_subject_on_a_blurred_background_is_not_an_upscale():
    photo = texture(1280, 720, 0)
    shallow = photo.filter(ImageFilter.GaussianBlur(4))  # everything defocused...
    assert _upscaled(*_eff(shallow))  # (soft everywhere: this one reads as an upscale)
    # ...but the subject, off-centre (between where a coarse grid of probes would look)
    shallow.paste(photo.crop((200, 400, 440, 640)), (200, 400))
    short, eff = _eff(shallow)
    assert not _upscaled(short, eff) and eff == 720
    # The same picture blown up x5 is soft everywhere: an upscale.
    fake = photo.resize((256, 144), Image.Resampling.LANCZOS).resize((1280, 720), Image.BICUBIC)
    short, eff = _eff(fake)
    assert _upscaled(short, eff) and eff <= 720 / 3


def test_a_nearest_neighbour_blow_up_is_found_by_its_block_grid():
    photo = texture(1280, 720, 1)
    small = photo.resize((320, 180), Image.Resampling.LANCZOS)
    short, eff = _eff(small.resize((1280, 720), Image.Resampling.NEAREST))
    assert _upscaled(short, eff) and 100 <= eff <= 260  # x4: about 180 px of real detail
    assert not _upscaled(*_eff(photo))


def test_byte_copies_always_group_even_when_pruning_drops_them():
    # 25 byte copies (rows 2..26) chain to a larger picture only through row 1: the larger one
    # is kept, the copies are not close to it and are pruned, yet must stay one group.
    n = 27
    ph = np.array([0, 0b1111] + [0xFF] * 25, dtype=np.uint64)
    sig = dup.Signals(ph, ph.copy(), np.zeros((n, 3)), max_phash=5, max_dhash=5)
    key = np.array(["a", "c"] + ["b"] * 25, dtype=object)
    real_px = np.array([4e6, 1e6] + [1e6] * 25)
    r = dup.find_duplicates(key, sig, real_px, np.ones(n), np.ones(n, bool))
    copies = r.group[2:]
    assert (copies >= 0).all() and len(set(copies.tolist())) == 1
    assert r.keep[2:].sum() == 1 and r.exact[2:].all()  # same pixels as their kept copy
    assert not r.exact[:2].any()  # nothing else shares the kept copy's pixels


def _scan_and_clean(root, tmp_path):
    scan(root, tmp_path / "ws", workers=0, embed=False, progress=False, log=lambda m: None)
    with Catalog(tmp_path / "ws") as cat:
        c, mm = detector_inputs(cat)
        records, _ = find_issues(c, mm, TH, log=lambda m: None)
    path_of = dict(zip(c["id"].tolist(), c["path"], strict=True))
    return [(path_of[r.image_id], r) for r in records]


def test_the_clean_original_is_kept_over_its_watermarked_and_reencoded_copies(tmp_path):
    root = tmp_path / "crawl" / "photos"
    root.mkdir(parents=True)
    photo = texture(1280, 720, 2)
    photo.save(root / "original.jpg", quality=92)
    marked = photo.copy()
    draw = ImageDraw.Draw(marked)
    font = ImageFont.load_default(90)
    draw.text((80, 440), "(c) stockpix.example", font=font, fill=(255, 255, 255))
    marked.save(root / "watermarked.jpg", quality=92)
    photo.save(root / "reencoded.jpg", quality=55)
    found = _scan_and_clean(root.parent, tmp_path)
    kept = {p for p, r in found if r.issue in ("exact_duplicate", "near_duplicate") and r.keep}
    grouped = {p for p, r in found if r.issue in ("exact_duplicate", "near_duplicate")}
    assert kept == {"photos/original.jpg"}
    assert {"photos/reencoded.jpg", "photos/original.jpg"} <= grouped


def test_colour_variants_of_a_drawing_are_not_copies(tmp_path):
    root = tmp_path / "crawl" / "drawings"
    root.mkdir(parents=True)
    im = Image.new("RGB", (576, 576), "white")
    d = ImageDraw.Draw(im)
    d.ellipse((150, 120, 430, 400), fill=(230, 120, 160), outline=(40, 20, 30), width=6)
    d.rectangle((250, 380, 330, 500), fill=(200, 90, 40), outline=(40, 20, 30), width=6)
    im.save(root / "flamingo.png")
    im.save(root / "flamingo_q80.jpg", quality=80)  # a real copy
    hsv = np.asarray(im.convert("HSV")).copy()
    for turn in (85, 170):
        v = hsv.copy()
        v[..., 0] = (v[..., 0].astype(int) + turn) % 256
        Image.fromarray(v, "HSV").convert("RGB").save(root / f"flamingo_hue{turn}.png")
    found = _scan_and_clean(root.parent, tmp_path)
    grouped = {p for p, r in found if r.issue in ("exact_duplicate", "near_duplicate")}
    assert grouped == {"drawings/flamingo.png", "drawings/flamingo_q80.jpg"}
    assert not any(r.issue == "blank" for _, r in found)  # a drawing on white is not blank


def test_no_single_threshold_floods_the_review_queue():
    n = 1000
    cand = {
        "label_error": (np.arange(10), np.linspace(1, 0.5, 10)),
        "upscaled": (np.arange(100, 400), np.full(300, 0.99)),  # 300 borderline upscaled scores
        "doubtful_label": (np.arange(500, 600), np.linspace(0.4, 0.1, 100)),
    }
    q = ranked_queue(cand, n, 0.08, max_borderline_share=0.15)
    assert len(q) == 80
    assert q[:10].tolist() == list(range(10))  # label errors first, surest first
    assert ((q >= 100) & (q < 400)).sum() <= 12  # at most 15% from one detector's threshold
    assert len(set(q.tolist())) == len(q)


def test_export_counts_groups_left_with_no_copy():
    group = np.array([0, 0, 0, 1, 1, -1])
    alive = np.array([False, False, False, True, False, True])
    reason = np.array(
        ["review: drop", "near_duplicate (a copy)", "exact_duplicate (a copy)", None, "x", None],
        dtype=object,
    )
    assert orphaned_groups(group, alive, reason) == 1  # group 0 lost every copy; 1 kept one


def test_issue_rows_are_typed_and_read_by_name(tmp_path):
    from thresher.clean.findings import clean
    from thresher.issue_model import ACTIONS, IssueRow

    root = tmp_path / "crawl" / "photos"
    root.mkdir(parents=True)
    photo = texture(640, 640, 3)
    photo.save(root / "a.png")
    (root / "b.png").write_bytes((root / "a.png").read_bytes())  # a byte copy
    scan(root.parent, tmp_path / "ws", workers=0, embed=False, progress=False, log=lambda m: None)
    summary = clean(tmp_path / "ws", log=lambda m: None)
    with Catalog(tmp_path / "ws") as cat:
        rows = cat.issues()
    assert rows and all(isinstance(r, IssueRow) for r in rows)
    assert {r.path for r in rows} == {"photos/a.png", "photos/b.png"}
    assert {r.issue for r in rows} == {"exact_duplicate"} and sum(r.keep for r in rows) == 1
    assert len({r.grp for r in rows}) == 1 and all(r.issue in ACTIONS for r in rows)
    assert summary.by_issue == {"exact_duplicate": 1} and summary.confidence["exact_duplicate"] == 1


def test_a_lossless_edit_of_the_kept_copy_goes_to_a_person_not_the_bin():
    # Group 0: row 0 kept (PNG 576x576); row 1 another PNG of the same size with other pixels
    # (an expression variant, a revision: an edit); row 2 its JPEG re-encode; row 3 a PNG
    # resized copy; row 4 a byte twin of the kept one. Only row 1 is an edit.
    r = dup.DuplicateResult(
        group=np.array([0, 0, 0, 0, 0, -1]),
        keep=np.array([True, False, False, False, False, False]),
        exact=np.array([True, False, False, False, True, False]),
        confidence=np.ones(6, np.float32),
        keep_row=np.array([0, 0, 0, 0, 0, -1]),
    )
    lossless = np.array([True, True, False, True, True, True])
    w = np.array([576.0, 576, 576, 288, 576, 576])
    edit = dup.edits_of_kept(r, lossless, w, w.copy())
    assert edit.tolist() == [False, True, False, False, False, False]


def test_near_duplicate_edits_are_reviewed_and_made_copies_dropped():
    from thresher.issue_model import ACTIONS, DUPLICATE_KINDS, GROUP_KINDS, removes

    assert removes("near_duplicate", keep=False)  # precision 1.0 on the real bench
    assert ACTIONS["near_duplicate_edit"] == "review"
    assert not removes("near_duplicate_edit", keep=False)
    assert "near_duplicate_edit" in DUPLICATE_KINDS and "near_duplicate_edit" in GROUP_KINDS


def test_copies_of_a_mislabelled_picture_do_not_vouch_for_its_label():
    # A picture filed 6 times under the wrong label (class 1) inside class 0's cluster: its own
    # copies outvote the other pictures unless the duplicate group is left out of the vote.
    from thresher.clean import label_issues as li

    rng = np.random.default_rng(0)
    centres = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    x = np.concatenate(
        [
            centres[0] + 0.05 * rng.normal(size=(20, 3)),
            centres[1] + 0.05 * rng.normal(size=(20, 3)),
            np.repeat(centres[:1] + 0.001, 6, axis=0),
        ]
    )
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    y = np.r_[np.zeros(20, int), np.ones(20, int), np.ones(6, int)]
    groups = np.r_[np.full(40, -1), np.zeros(6, int)]
    blind = li.knn_probs(x, y, 2, k=5)
    aware = li.knn_probs(x, y, 2, k=5, groups=groups)
    assert blind[40:, 1].min() > 0.9  # its five nearest are its own copies
    assert aware[40:, 0].min() > 0.9  # the other pictures say class 0
    fold_probs = li.probe_probs(x, y, 2, groups=groups)
    assert fold_probs[40:, 0].min() > 0.5  # no fold taught its own copies' label


def test_a_label_question_on_a_file_clean_removes_is_not_queued():
    # A drawing and its JPEG copy, both filed under the wrong class: the copy is dropped as a
    # copy, so only the kept file may take a place in the review queue.
    from thresher.clean.findings import Inputs, queue_files
    from thresher.clean.label_issues import LabelResult
    from thresher.issue_model import Found

    n = 6
    group = np.array([0, 0, -1, -1, -1, -1])
    d = dup.DuplicateResult(
        group=group,
        keep=np.array([True, False, False, False, False, False]),
        exact=np.zeros(n, bool),
        confidence=np.array([0, 0.99, 0, 0, 0, 0], np.float32),
        keep_row=np.array([0, 0, -1, -1, -1, -1]),
    )
    wrong = np.array([True, True, False, False, False, False])
    none = np.zeros(n, bool)
    found = [
        Found.where("upscaled", none, np.zeros(n)),
        Found.where("blank", none, np.zeros(n)),
        Found.where("near_duplicate", group >= 0, d.confidence, group=group, keep=d.keep),
        Found.where("label_error", wrong, np.full(n, 0.8)),
    ]
    probs = np.where(wrong[:, None], [[0.2, 0.8]], [[0.9, 0.1]]).astype(np.float32)
    y = np.zeros(n, int)
    le = LabelResult(wrong, np.where(wrong, 0.8, 0.0), np.where(wrong, 1, -1), probs)
    c = {"id": np.arange(n), "label": np.array(["a"] * n, dtype=object)}
    th = CleanThresholds(review_fraction=0.5)
    x = Inputs(c, th, np.ones(n, bool), None, duplicates=d, blank=none)
    x.label_probs = (np.arange(n), ["a", "b"], y, le)
    in_queue, _ = queue_files(x, found)
    assert in_queue[0] > 0  # the kept file's label is a real question
    assert in_queue[1] == 0  # its copy goes anyway
