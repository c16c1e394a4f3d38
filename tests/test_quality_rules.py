"""Quality rules on small arrays and on the demo crawl's planted truth."""

from __future__ import annotations

import numpy as np

from thresher.catalog import Catalog
from thresher.clean import quality_rules as qr
from thresher.config import CleanThresholds
from thresher.scan.runner import scan

TH = CleanThresholds()


def test_low_resolution_threshold_and_confidence():
    w = np.array([100.0, 511, 512, 4000, np.nan])
    h = np.array([100.0, 2000, 512, 3000, np.nan])
    ok = np.array([True, True, True, True, False])
    r = qr.low_resolution(w, h, ok, TH)
    assert r.is_issue.tolist() == [True, True, False, False, False]
    assert r.confidence[0] > r.confidence[1] > 0.5 and r.confidence[2] == 0
    assert r.reason[1] == "short side 511 px < 512"


def test_upscaled_needs_a_large_nominal_size_and_a_small_effective_one():
    w = np.array([3840.0, 3840, 300])
    h = np.array([2160.0, 2160, 200])
    eff = np.array([200.0, 2160, 200])
    r = qr.upscaled(w, h, eff, np.ones(3, bool), TH)
    assert r.is_issue.tolist() == [True, False, False]  # the small one is low-res, not a fake
    assert "only ~200 px of real detail" in r.reason[0]


def test_blank_only_when_near_uniform_everywhere():
    std = np.array([[0.5, 0.5, 0.5], [40, 40, 40], [40, 30, 20], [3.9, 1, 1]])
    r = qr.blank(std, np.ones(4, bool), TH)
    # [1] is 95% one colour (a drawing on white): not blank, however much white it has
    assert r.is_issue.tolist() == [True, False, False, True]
    assert r.confidence[0] > r.confidence[3]


def test_a_drawing_on_white_is_not_blank_and_a_noisy_plain_colour_is():
    from PIL import Image, ImageDraw

    from thresher.scan.quality import pixel_stats, stats_thumbnail

    drawing = Image.new("RGB", (576, 576), "white")
    d = ImageDraw.Draw(drawing)
    d.ellipse((200, 220, 330, 350), outline="black", width=4)  # a small line drawing
    d.line((265, 350, 265, 470), fill="black", width=4)
    rng = np.random.default_rng(0)
    plain = np.clip(rng.normal(180, 3.0, (600, 800, 3)), 0, 255).astype(np.uint8)
    thumbs = np.stack([stats_thumbnail(drawing), stats_thumbnail(Image.fromarray(plain))])
    s = pixel_stats(thumbs)
    assert s["dominant_share"][0] > 0.9  # mostly white: the old rule called this blank
    std = np.stack([s["std_r"], s["std_g"], s["std_b"]], 1)
    assert qr.blank(std, np.ones(2, bool), TH).is_issue.tolist() == [False, True]


def test_unusable_statuses_each_get_their_own_issue():
    status = np.array(["ok", "corrupt", "oversized", "empty", "alias"], dtype=object)
    out = qr.unusable(status)
    assert out["corrupt"].is_issue.tolist() == [False, True, False, False, False]
    assert out["oversized"].confidence[2] == 1.0
    assert not any(r.is_issue[4] for r in out.values())  # an alias is not an issue


def test_rules_match_the_planted_truth_of_the_demo(crawl, truth, tmp_path):
    scan(crawl, tmp_path / "ws", workers=0, embed=False, progress=False, log=lambda m: None)
    with Catalog(tmp_path / "ws") as cat:
        c = cat.columns(
            [
                "path",
                "status",
                "width",
                "height",
                "effective_short_side",
                "std_r",
                "std_g",
                "std_b",
                "dominant_share",
            ]
        )
    ok = c["status"] == "ok"
    by_path = {t.path: t for t in truth}
    rules = {
        "low_res": qr.low_resolution(c["width"], c["height"], ok, TH),
        "upscaled": qr.upscaled(c["width"], c["height"], c["effective_short_side"], ok, TH),
        "blank": qr.blank(np.stack([c["std_r"], c["std_g"], c["std_b"]], 1), ok, TH),
    }
    for field, r in rules.items():
        flagged = set(c["path"][r.is_issue])
        planted = {p for p, t in by_path.items() if getattr(t, field)}
        assert len(flagged & planted) >= 0.9 * len(planted), field
        assert len(flagged - planted) <= max(1, 0.05 * len(flagged)), field
    corrupt = set(c["path"][qr.unusable(c["status"])["corrupt"].is_issue])
    assert corrupt == {p for p, t in by_path.items() if t.status == "corrupt"}
