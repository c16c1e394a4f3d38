"""The command line as a user meets it: real subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

COMMANDS = [
    "scan",
    "clean",
    "issues",
    "review",
    "export",
    "train",
    "doctor",
    "ddp-check",
    "cost",
    "demo",
]


def run(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "thresher.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def test_help_lists_every_command():
    r = run("--help")
    assert r.returncode == 0
    for c in COMMANDS:
        assert c in r.stdout
    assert "not built" not in r.stdout  # every issue's command exists now


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command):
    r = run(command, "--help")
    assert r.returncode == 0 and "Usage" in r.stdout and "--" in r.stdout


def test_missing_source_is_one_line_exit_2(tmp_path):
    r = run("scan", tmp_path / "nope", "-w", tmp_path / "ws")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: source not found: {tmp_path / 'nope'}"]
    assert "Traceback" not in r.stderr + r.stdout


def test_unwritable_workspace_is_one_line_exit_2(tmp_path):
    (tmp_path / "crawl").mkdir()
    (tmp_path / "a_file").write_text("")
    r = run("scan", tmp_path / "crawl", "-w", tmp_path / "a_file" / "ws")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write the workspace" in lines[0]
    assert "Traceback" not in r.stderr


def test_a_bad_option_value_names_the_setting(tmp_path):
    (tmp_path / "crawl").mkdir()
    r = run("scan", tmp_path / "crawl", "-w", tmp_path / "ws", "--view-px", "3")
    assert r.returncode == 2 and "view_px" in r.stderr and "Traceback" not in r.stderr


def test_the_documented_offline_embedding_form_works(crawl, mobilenet_weights, tmp_path):
    ws = tmp_path / "ws"
    r = run(
        "scan",
        crawl / "triangle",
        "--embedder",
        "torchvision:mobilenet_v2",
        "--weights",
        mobilenet_weights,
        "-w",
        ws,
        "-q",
    )
    assert r.returncode == 0, r.stderr
    assert "embedded with torchvision:mobilenet_v2" in r.stdout
    db = sqlite3.connect(ws / "catalog.sqlite")
    n_ok, n_emb = db.execute("SELECT SUM(status='ok'), SUM(has_embedding) FROM images").fetchone()
    assert n_ok > 0 and n_emb == n_ok


def test_workspace_can_come_from_the_environment(crawl, tmp_path):
    import os

    env = {**os.environ, "THRESHER_WORKSPACE": str(tmp_path / "from_env")}
    r = run("scan", crawl / "cross", "--no-embed", "-q", env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "from_env" / "catalog.sqlite").exists()


def test_every_command_is_also_a_python_function(tmp_path):
    import thresher
    import thresher.clean.report as report  # ordinary imports of the subpackages still work
    import thresher.scan.runner as runner

    assert callable(thresher.scan) and callable(thresher.clean)
    assert runner.scan.__doc__ and report.write_issues.__doc__
    with pytest.raises(thresher.ThresherError, match="source not found"):
        thresher.scan(tmp_path / "nope", tmp_path / "ws")  # the call reaches runner.scan
    with pytest.raises(thresher.ThresherError, match="thresher scan"):
        thresher.clean(tmp_path / "no-catalog")  # and findings.clean
    assert callable(thresher.export) and callable(thresher.train) and callable(thresher.review)
    for name in ("write_issues", "html_report", "demo"):
        assert callable(getattr(thresher, name)) and getattr(thresher, name).__doc__
