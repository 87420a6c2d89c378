"""A bounded fuzz run in the default suite: every reader, a few hundred mutated inputs each.

``make fuzz`` runs the same targets against 1,000,000 inputs (CI runs it too).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from tests import fuzz_targets

TARGETS = ("spec", "bundle", "request", "approval", "manifest", "enrolment", "state", "audit")


@pytest.fixture(scope="module")
def targets() -> Iterator[dict[str, fuzz_targets.Target]]:
    found, scratch = fuzz_targets.targets(seed=1)
    yield {t.name: t for t in found}
    scratch.tmp.cleanup()


def test_every_reader_has_a_target(targets: dict[str, fuzz_targets.Target]) -> None:
    assert sorted(targets) == sorted(TARGETS)


@pytest.mark.parametrize("name", TARGETS)
def test_only_project_errors_escape(targets: dict[str, fuzz_targets.Target], name: str) -> None:
    count = 40 if name in ("spec", "bundle") else 1500
    assert fuzz_targets.run_target(targets[name], count) == count


def test_the_harness_reports_an_escape() -> None:
    """The harness must be able to fail: a reader that raises KeyError is a finding."""

    def broken(data: bytes, n: int) -> None:
        raise KeyError("x")

    target = fuzz_targets.Target(
        "broken", fuzz_targets.Mutator([{"a": 1}], random.Random(0),
                                       canonical_form=True), broken, 1
    )  # fmt: skip
    with pytest.raises(fuzz_targets.Finding, match="KeyError"):
        fuzz_targets.run_target(target, 1)
