"""`thresher export`: issues and decisions applied, a leak-free stratified split, weights."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from thresher.catalog import Catalog
from thresher.clean.findings import ACTIONS
from thresher.clean.report import issue_table
from thresher.config import ExportPolicy
from thresher.data.split import group_stratified_split
from thresher.errors import ThresherError
from thresher.export import export


def test_split_keeps_groups_whole_and_classes_at_their_share():
    rng = np.random.default_rng(0)
    n = 5000
    labels = rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1])
    groups = np.where(rng.random(n) < 0.3, rng.integers(0, 400, n), -1)
    # A group is one picture: give each group one label, as clean's groups mostly have.
    g_label = rng.choice(["a", "b", "c"], 400, p=[0.6, 0.3, 0.1])
    labels = np.where(groups >= 0, g_label[groups], labels)
    keys = rng.permutation(n) + 10
    val = group_stratified_split(labels, groups, keys, 0.2, seed=3)
    for g in np.unique(groups[groups >= 0]):
        assert len(set(val[groups == g])) == 1  # never split
    for c in "abc":
        share = val[labels == c].mean()
        assert abs(share - 0.2) < 0.03, (c, share)
    assert (val == group_stratified_split(labels, groups, keys, 0.2, seed=3)).all()
    assert (val != group_stratified_split(labels, groups, keys, 0.2, seed=4)).any()


def test_split_is_stable_when_files_are_added_and_keeps_a_training_unit():
    labels = np.array(["a"] * 200)
    groups = np.full(200, -1)
    keys = np.arange(200)
    before = group_stratified_split(labels, groups, keys, 0.1)
    more = group_stratified_split(np.array(["a"] * 210), np.full(210, -1), np.arange(210), 0.1)
    assert (before == more[:200]).mean() > 0.97  # a few units move at the boundary, no reshuffle
    assert not group_stratified_split(np.array(["x", "x"]), np.array([-1, -1]), [1, 2], 0.9).all()
    assert not group_stratified_split(np.array(["x"]), np.array([-1]), [1], 0.5).any()


def _manifest(out):
    return pq.read_table(out / "manifest.parquet").to_pydict()


def test_export_applies_actions_decisions_and_weights(cleaned_copy, tmp_path):
    ws = cleaned_copy
    t = issue_table(ws).to_pydict()
    by_kind: dict[str, set] = {}
    for path, kind, keep in zip(t["path"], t["issue"], t["keep"], strict=True):
        if ACTIONS[kind] == "drop" or (ACTIONS[kind] == "keep one" and not keep):
            by_kind.setdefault(kind, set()).add(path)
    with Catalog(ws) as cat:
        ids = {p: i for i, p in zip(*cat.columns(["id", "path"]).values(), strict=True)}
        low = sorted(by_kind["low_resolution"])[0]
        good = [p for p in ids if not any(p in v for v in by_kind.values())]
        cat.decide(ids[low], "keep")  # a person overrides the rule
        cat.decide(ids[good[0]], "drop")
        cat.decide(ids[good[1]], "relabel", "hexagon")
        cat.decide(ids[good[2]], "relabel", "hexagon")
    s = export(ws, tmp_path / "out", log=lambda m: None)
    m = _manifest(tmp_path / "out")
    root = str(next(iter(m["path"]))).rsplit("/crawl/", 1)[0] + "/crawl/"
    rel = [p[len(root) :] for p in m["path"]]
    exported = set(rel)
    for kind, paths in by_kind.items():
        assert not (paths - {low}) & exported, kind
    assert low in exported and good[0] not in exported
    lab = dict(zip(rel, m["label"], strict=True))
    assert lab[good[1]] == lab[good[2]] == "hexagon"
    assert s.decisions_applied == 4 and s.dropped["review: drop"] == 1
    # Every duplicate group (and any copies a person kept) sits in one split.
    split = dict(zip(rel, m["split"], strict=True))
    groups: dict[int, set] = {}
    for p, g in zip(rel, m["group"], strict=True):
        if g >= 0:
            groups.setdefault(g, set()).add(split[p])
    assert all(len(v) == 1 for v in groups.values())
    # Weights: the balancing plan on the training split, 1 for validation.
    for label, split_, w in zip(m["label"], m["split"], m["weight"], strict=True):
        assert w == pytest.approx(s.plan[label] if split_ == "train" else 1.0)
    assert max(s.plan.values()) <= 3.0 and min(s.plan.values()) == 1.0
    assert sum(s.counts_train.values()) + sum(s.counts_val.values()) == len(rel) == s.exported
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_policy_can_relabel_label_errors_and_names_unknown_kinds(cleaned_copy, tmp_path):
    t = issue_table(cleaned_copy).to_pydict()
    errors = {
        p: sug
        for p, kind, sug in zip(t["path"], t["issue"], t["suggested_label"], strict=True)
        if kind == "label_error"
    }
    pol = ExportPolicy(actions={"label_error": "relabel"})
    export(cleaned_copy, tmp_path / "out", pol, link="symlink", log=lambda m: None)
    m = _manifest(tmp_path / "out")
    got = {p.split("/crawl/", 1)[1]: lab for p, lab in zip(m["path"], m["label"], strict=True)}
    relabelled = [p for p in errors if p in got]
    assert relabelled and all(got[p] == errors[p] for p in relabelled)
    tree = list((tmp_path / "out" / "imagefolder").rglob("*.*"))
    assert len(tree) == len(m["path"]) and all(p.is_symlink() for p in tree)
    with pytest.raises(ThresherError, match="unknown issue kind.*label_eror"):
        export(cleaned_copy, tmp_path / "o2", ExportPolicy(actions={"label_eror": "drop"}))


def _export_cli(ws, out, policy):
    return subprocess.run(
        [sys.executable, "-m", "thresher.cli", "export", "-w", ws, "--out", out,
         "--policy", policy],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_export_cli_prints_the_class_table(cleaned_copy, tmp_path):
    (tmp_path / "p.yaml").write_text("val_fraction: 0.25\n")
    r = _export_cli(cleaned_copy, tmp_path / "o", tmp_path / "p.yaml")
    assert r.returncode == 0, r.stderr
    assert "before" in r.stdout and "balancing plan" in r.stdout and "files exported" in r.stdout
    m = _manifest(tmp_path / "o")
    assert 0.18 < m["split"].count("val") / len(m["split"]) < 0.3
    (tmp_path / "bad.yaml").write_text("val_fractoin: 0.25\n")
    r = _export_cli(cleaned_copy, tmp_path / "o", tmp_path / "bad.yaml")
    assert r.returncode == 2 and 'unknown key "val_fractoin"' in r.stderr


def test_a_group_left_with_no_copy_is_warned_about_once(cleaned_copy, tmp_path):
    from thresher.catalog import Catalog
    from thresher.export import export

    with Catalog(cleaned_copy, create=False) as cat:
        kept = next(r for r in cat.issues() if r.issue == "exact_duplicate" and r.keep)
        cat.decide(kept.image_id, "drop")  # its copies go as duplicates: the picture is gone
    said = []
    export(cleaned_copy, tmp_path / "out", log=said.append)
    warnings = [m for m in said if "left with no copy" in m]
    assert len(warnings) == 1 and warnings[0].startswith("warning: 1 duplicate group")
