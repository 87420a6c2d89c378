"""A long audit log is checked in parts, one process per core, with the same result and errors.

``builder.host.audit`` cuts a log above ``_SPLIT_BYTES`` at newlines; each later part is
checked by a forked child that numbers and chains its lines from the start of the log.
The size threshold is lowered here so that a small log is cut.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.core.canonical import digest, dumps
from builder.core.errors import CheckFailed
from builder.host import audit


def _log(directory: Path, events: int) -> tuple[Path, Path]:
    prev = audit.GENESIS
    lines = []
    for seq in range(1, events + 1):
        event = "activated" if seq % 7 == 0 else "approval-accepted"
        line = dumps({"seq": seq, "time": "2026-11-29T19:00:00Z", "event": event, "actor": "root",
                      "request_id": f"r{seq}", "scope": "s", "details": {"n": seq}, "prev": prev})  # fmt: skip
        lines.append(line)
        prev = digest(line)
    log, head = directory / "audit.jsonl", directory / "audit.head"
    log.write_bytes(b"".join(lines))
    head.write_bytes(dumps({"seq": events, "head": prev}))
    return log, head


@pytest.fixture
def parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)


def _both(monkeypatch: pytest.MonkeyPatch, log: Path, head: Path) -> list[object]:
    results: list[object] = []
    for split in (1 << 40, 1):
        monkeypatch.setattr(audit, "_SPLIT_BYTES", split)
        try:
            results.append(audit.verify_chain(log, head, strict=True))
        except CheckFailed as e:
            results.append(e.message)
    return results


def test_parts_give_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts: None
) -> None:
    log, head = _log(tmp_path, 200)
    with log.open("rb") as f:
        monkeypatch.setattr(audit, "_SPLIT_BYTES", 1)
        assert len(audit._split(f, log.stat().st_size)) == 3
    whole, split = _both(monkeypatch, log, head)
    assert whole == split
    assert isinstance(whole, tuple) and whole[0] == 200 and whole[3]["request_id"] == "r196"


@pytest.mark.parametrize("edits", [[150], [60, 150], [199], [51]])
def test_parts_report_the_first_bad_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts: None, edits: list[int]
) -> None:
    log, head = _log(tmp_path, 200)
    lines = log.read_bytes().splitlines(keepends=True)
    for n in edits:
        lines[n - 1] = lines[n - 1].replace(b'"actor":"root"', b'"actor":"toor"')
    log.write_bytes(b"".join(lines))
    whole, split = _both(monkeypatch, log, head)
    assert (
        whole
        == split
        == (
            f"audit log line {edits[0]}: edited, or lines removed or moved after it "
            f"(line {edits[0] + 1} does not chain to it)"
        )
    )


def test_parts_report_a_line_that_is_not_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts: None
) -> None:
    log, head = _log(tmp_path, 200)
    lines = log.read_bytes().splitlines(keepends=True)
    lines[170] = b"{oops\n"
    log.write_bytes(b"".join(lines))
    whole, split = _both(monkeypatch, log, head)
    assert whole == split == "audit log line 171: not json"
