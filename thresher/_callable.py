"""Subpackages that are also the commands: `thresher.scan(...)` and `import thresher.scan.x`.

`scan/` and `clean/` are folders of the pipeline and, called, the functions users run. A module
object cannot be called, so each of the two packages swaps its module class for one whose
call forwards to its command function. Every ordinary import form keeps working.
"""

from __future__ import annotations

import importlib
import sys
import types


def make_callable(package: str, target: str) -> None:
    """Make sys.modules[package] callable as the function `target` ('module:function')."""
    module_name, func_name = target.split(":")

    class _CommandModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(importlib.import_module(module_name), func_name)(*args, **kwargs)

    sys.modules[package].__class__ = _CommandModule
