"""Loading a user's object named 'package.module:name', with errors that say what it was for.

One loader for every such spec in a recipe or on the command line (the user_transform, the
thermal sensor, `ddp-check --setup`): a typo is one line naming the setting, never a
traceback, and never a message about some other setting.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from thresher.errors import ThresherError


def load_object(
    spec: str,
    what: str,
    is_valid: Callable[[object], bool] = callable,
    expected: str = "callable",
) -> object:
    """The object `spec` ('module:name') names; a ThresherError naming `what` if it cannot be had.

    `is_valid` checks what was found (by default: that it can be called), and `expected` says
    in the error what it should have been.
    """
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        shape = "module:callable" if is_valid is callable else "module:name"
        raise ThresherError(f"{what} must be '{shape}', not {spec!r}")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError, TypeError) as e:
        raise ThresherError(f"{what} {spec!r} cannot be loaded: {e}") from None
    if not is_valid(obj):
        raise ThresherError(f"{what} {spec!r} is not {expected}")
    return obj
