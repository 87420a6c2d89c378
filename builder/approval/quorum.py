"""Who must agree: approver groups and the k-of-n arithmetic, in one place.

A policy is ``group_threshold`` groups, each satisfied by ``threshold`` of its
``members`` (SLIP-39's two-level scheme; a plain k-of-n is one group). The
spec, the sealed bundle, requests, verification and the host all use these.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from builder.core.record import record


@record
class Group:
    """One group of approvers: ``threshold`` of ``members`` must approve."""

    name: str
    threshold: int
    members: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold, "members": list(self.members)}


def fewest(group_threshold: int, thresholds: Iterable[int]) -> int:
    """The smallest number of approvals that can meet the quorum."""
    return sum(sorted(thresholds)[:group_threshold])


def met(group_threshold: int, groups: Iterable[Group], approvers: set[str]) -> bool:
    """True when ``approvers`` satisfy ``group_threshold`` groups, each by its own threshold."""
    done = sum(1 for g in groups if len(approvers & set(g.members)) >= g.threshold)
    return done >= group_threshold
