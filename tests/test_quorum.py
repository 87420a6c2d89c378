"""The k-of-n arithmetic (``builder.approval.quorum``) against a brute force over every approver subset.

``fewest`` decides whether a policy keeps the two-person rule (lint, build,
verify); ``met`` decides whether the host opens a scope. Both are checked here
against an independent count: every subset of the approvers, and for each one
every choice of ``group_threshold`` groups.
"""

from __future__ import annotations

from itertools import chain, combinations

from hypothesis import given, settings
from hypothesis import strategies as st

from builder.approval.quorum import Group, fewest, met

OUTSIDER = "mallory"  # in no group: approves nothing, however many groups there are


@st.composite
def policies(draw: st.DrawFn) -> tuple[int, tuple[Group, ...]]:
    """1-4 groups of 1-3 distinct members each, any valid thresholds, any valid group_threshold."""
    sizes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))
    groups = []
    n = 0
    for i, size in enumerate(sizes):
        members = tuple(f"a{n + j}" for j in range(size))
        n += size
        groups.append(Group(f"g{i}", draw(st.integers(1, size)), members))
    return draw(st.integers(1, len(groups))), tuple(groups)


def subsets(names: list[str]) -> list[set[str]]:
    return [
        set(c) for c in chain.from_iterable(combinations(names, k) for k in range(len(names) + 1))
    ]


def brute_met(group_threshold: int, groups: tuple[Group, ...], approvers: set[str]) -> bool:
    """Some choice of ``group_threshold`` groups is satisfied, each by its own members."""
    return any(
        all(sum(1 for m in g.members if m in approvers) >= g.threshold for g in chosen)
        for chosen in combinations(groups, group_threshold)
    )


def brute_fewest(group_threshold: int, groups: tuple[Group, ...]) -> int:
    names = [m for g in groups for m in g.members]
    return min(len(s) for s in subsets(names) if brute_met(group_threshold, groups, s))


@settings(max_examples=300, deadline=None)
@given(policies())
def test_fewest_is_the_smallest_subset_that_meets_the_quorum(
    policy: tuple[int, tuple[Group, ...]],
) -> None:
    group_threshold, groups = policy
    assert fewest(group_threshold, [g.threshold for g in groups]) == brute_fewest(
        group_threshold, groups
    )


@settings(max_examples=300, deadline=None)
@given(policies())
def test_met_agrees_with_brute_force_on_every_subset(policy: tuple[int, tuple[Group, ...]]) -> None:
    group_threshold, groups = policy
    names = [m for g in groups for m in g.members] + [OUTSIDER]
    for approvers in subsets(names):
        assert met(group_threshold, groups, approvers) == brute_met(
            group_threshold, groups, approvers
        ), (group_threshold, groups, sorted(approvers))


def test_met_accepts_any_iterable_of_groups() -> None:
    # unseal passes a tuple, the spec a generator: both must be read once, fully
    groups = (Group("a", 1, ("x",)), Group("b", 1, ("y",)))
    assert met(2, iter(groups), {"x", "y"})
    assert not met(2, iter(groups), {"x"})


def test_two_groups_of_one_approver_each() -> None:
    """The case behind the two-person rule: two groups, one member each, one group needed."""
    groups = (Group("sre", 1, ("alice",)), Group("ops", 2, ("bob", "carol")))
    assert fewest(1, [1, 2]) == 1  # alice alone: lint must refuse this policy
    assert met(1, groups, {"alice"})
    assert fewest(2, [1, 2]) == 3
    assert not met(2, groups, {"alice", "bob"})
    assert not met(2, groups, {"bob", "carol"})
    assert met(2, groups, {"alice", "bob", "carol"})


def test_group_to_dict_round_trips_through_a_request() -> None:
    from builder.approval.request import group_from_dict

    g = Group("sre", 2, ("alice", "bob", "carol"))
    assert g.to_dict() == {"name": "sre", "threshold": 2, "members": ["alice", "bob", "carol"]}
    assert group_from_dict(g.to_dict(), "request") == g
