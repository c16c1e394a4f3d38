"""`thresher demo`: the synthetic crawl, scanned, compared with its own ground truth."""

from __future__ import annotations

import subprocess
import sys

import pytest

from thresher.demo import CLASSES, read_truth


def test_generator_plants_what_truth_says(demo_dir, truth):
    root = demo_dir / "crawl"
    assert all((root / t.path).is_symlink() or (root / t.path).exists() for t in truth)
    kinds = {
        k: sum(getattr(t, k) for t in truth)
        for k in ("low_res", "upscaled", "blank", "wrong_label", "exact_copy")
    }
    assert all(v > 0 for v in kinds.values()), kinds
    statuses = {t.status for t in truth}
    assert {"corrupt", "empty", "not_image", "oversized", "alias", "broken_symlink"} <= statuses
    counts = {c: sum(t.true_label == c for t in truth) for c in CLASSES}
    assert max(counts.values()) >= 4 * min(counts.values())  # imbalanced, like a real crawl
    assert len({t.group for t in truth if t.group >= 0}) >= 2


@pytest.mark.slow
def test_demo_command_finds_what_was_planted(mobilenet_weights, tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "thresher.cli",
            "demo",
            "--out",
            str(out),
            "-q",
            "--embedder",
            "torchvision:mobilenet_v2",
            "--weights",
            str(mobilenet_weights),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "found vs planted" in r.stdout
    assert (out / "workspace" / "report.html").is_file()  # as `thresher clean` writes it
    from thresher.catalog import Catalog
    from thresher.demo import compare_with_truth

    with Catalog(out / "workspace", create=False) as cat:
        findings = {f.check: f for f in compare_with_truth(cat, read_truth(out))}
    for check in (
        "corrupt",
        "empty",
        "not_image",
        "oversized",
        "broken_symlink",
        "alias (symlink, not scanned twice)",
        "blank",
        "low_resolution",
        "duplicates (group members)",
        "kept copy: the original or its lossless twin",
    ):
        f = findings[check]
        assert f.planted == f.found == f.agree > 0, f
    up = findings["upscaled"]
    assert up.agree >= 0.8 * up.planted and up.found - up.agree <= 1
    le = findings["label_error"]
    assert le.agree >= 0.8 * le.planted and le.agree >= 0.8 * le.found
    assert findings["embedded images"].found == findings["embedded images"].planted
    assert "% of files flagged" in r.stdout and "balancing plan" in r.stdout
