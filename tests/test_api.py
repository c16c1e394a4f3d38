"""The public functions: real signatures and docstrings, the stage packages still importable."""

from __future__ import annotations

import importlib
import inspect
import pydoc
import subprocess
import sys

import pytest

import thresher

TARGETS = {
    "scan": "thresher.scan.runner:scan",
    "clean": "thresher.clean.findings:clean",
    "review": "thresher.review.server:serve",
    "export": "thresher.export:export",
    "train": "thresher.train.loop:train",
    "demo": "thresher.demo:demo",
}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_each_command_is_a_function_with_the_signature_of_what_it_runs(name):
    func = getattr(thresher, name)
    module, target = TARGETS[name].split(":")
    real = getattr(importlib.import_module(module), target)
    assert inspect.isfunction(func)
    assert inspect.signature(func) == inspect.signature(real)
    assert "*args" not in str(inspect.signature(func))
    first_line = func.__doc__.strip().splitlines()[0]
    text = pydoc.render_doc(func, renderer=pydoc.plaintext)
    assert f"function {name}" in text and first_line in text
    for param in inspect.signature(real).parameters:
        assert param in text


def test_the_stage_packages_stay_importable_under_the_function_names():
    import thresher.clean.report as report
    import thresher.scan.runner as runner
    from thresher.scan import hashes

    assert thresher.scan.runner is runner is sys.modules["thresher.scan.runner"]
    assert thresher.clean.report is report and thresher.scan.hashes is hashes
    assert thresher.export.ExportSummary is sys.modules["thresher.export"].ExportSummary
    assert inspect.isfunction(thresher.scan)  # importing a submodule did not replace it


def test_monkeypatching_through_the_function_name_reaches_the_module(monkeypatch):
    import thresher.scan.runner as runner

    monkeypatch.setattr("thresher.scan.runner.measure_files", "patched")
    assert runner.measure_files == "patched"


def test_import_thresher_loads_no_torch():
    code = "import sys, thresher; thresher.scan; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
