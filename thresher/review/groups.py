"""A duplicate group under review: which members export would keep, and the one rule a
person's decisions must respect: a group keeps at least one copy unless they say "drop all".

Pure functions over small dicts; the server feeds them catalog rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from thresher.issue_model import ACTIONS, default_fate

Decision = tuple[str, str | None] | None  # (decision, label) or None = undecided


def survives(issues: Sequence[tuple[str, bool]], decision: Decision, actions=ACTIONS) -> bool:
    """Whether export keeps a file: a person's decision wins, else the issues' default actions."""
    if decision is not None:
        return decision[0] != "drop"
    return default_fate(issues, actions) is None


def orphan_refusal(
    issues: Mapping[int, Sequence[tuple[str, bool]]],
    before: Mapping[int, Decision],
    after: Mapping[int, Decision],
    actions=ACTIONS,
) -> str | None:
    """Why `after` may not be saved (it leaves a group that had a copy with none), else None.

    `issues` maps each member of one group to its (kind, keep) pairs; `before`/`after` map
    members to their decisions (a missing member is undecided).
    """

    def alive(decisions: Mapping[int, Decision]) -> int:
        return sum(survives(issues[m], decisions.get(m), actions) for m in issues)

    if alive(after) == 0 < alive(before):
        return (
            "this would leave its duplicate group with no copy: keep another copy first "
            "(g opens the group), or choose 'drop all' there"
        )
    return None
