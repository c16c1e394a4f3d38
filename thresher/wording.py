"""How a count reads in a message a user sees: '1 worker', '3 workers'."""

from __future__ import annotations


def plural(n: int, noun: str) -> str:
    """'1 duplicate group', '3 duplicate groups'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
