"""A long audit log is checked in parts, one process per core, with the same result and errors.

``builder.host.audit`` cuts a log above ``_SPLIT_BYTES`` at newlines; each later part is
checked by a forked child that numbers and chains its lines from the start of the log.
The size threshold is lowered here so that a small log is cut.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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


def test_a_later_part_knows_its_line_number_and_the_hash_before_it(tmp_path: Path) -> None:
    # what a child process starts from: the line at byte `start`, and the previous line's hash
    log, _ = _log(tmp_path, 40)
    lines = log.read_bytes().splitlines(keepends=True)
    start = 0
    for n, line in enumerate(lines, start=1):
        if n > 1:
            assert audit._position(log, start) == (n, digest(lines[n - 2])), n
        start += len(line)
    with pytest.raises(CheckFailed, match=r"it shrank while being read"):
        audit._position(log, start + 1)


def test_the_position_is_counted_past_the_read_buffer(tmp_path: Path) -> None:
    # more than the 4 MiB read at a time before the cut; and a line before it longer than
    # any event: only its last MAX_LINE + 1 bytes are read back, which the hash then covers
    long = b"x" * (audit.MAX_LINE + 10) + b"\n"
    # an empty first line: every 4 MiB read then starts with a newline
    lines = [b"\n"] + [b"a\n"] * 3_000_000 + [b"b" * 100 + b"\n", long, b"c\n"]
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"".join(lines))
    start = sum(len(x) for x in lines[:-2])
    assert start > 4 << 20
    assert audit._position(log, start) == (3_000_003, digest(lines[-3]))
    assert audit._position(log, start + len(long)) == (
        3_000_004, digest(long[-(audit.MAX_LINE + 1) :]))  # fmt: skip


def test_parts_carry_what_an_earlier_part_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts: None
) -> None:
    # the only activation and the anchored line are in the first part; the head in the last
    log, head = _log(tmp_path, 200)
    lines = log.read_bytes().splitlines(keepends=True)
    prev, rewritten = audit.GENESIS, []
    for n, line in enumerate(lines, start=1):
        doc = json.loads(line)
        doc["event"], doc["prev"] = ("activated" if n == 3 else "approval-accepted"), prev
        line = dumps(doc)
        rewritten.append(line)
        prev = digest(line)
    log.write_bytes(b"".join(rewritten))
    head.write_bytes(dumps({"seq": 200, "head": prev}))
    anchor = digest(rewritten[4])
    results = []
    for threshold in (1 << 40, 1):
        monkeypatch.setattr(audit, "_SPLIT_BYTES", threshold)
        results.append(audit.verify_chain(log, head, expect_head=anchor))
    whole, split = results
    assert whole == split
    assert whole[0] == 200 and whole[1] == prev
    assert whole[3] is not None and whole[3]["seq"] == 3
    assert whole[4] is not None and whole[4]["seq"] == 200


def test_join_keeps_the_later_finding_else_the_earlier() -> None:
    first = (10, "h10", "a5", True, [{"seq": 2}], {"seq": 3}, {"seq": 10})
    later = (5, "h15", None, False, [{"seq": 12}], None, {"seq": 15})
    assert audit._join(first, later) == (
        15, "h15", "a5", True, [{"seq": 2}, {"seq": 12}], {"seq": 3}, {"seq": 15})  # fmt: skip
    later2: Any = (5, "h15", "a14", True, [], {"seq": 13}, None)
    first2: Any = (10, "h10", None, False, [], None, {"seq": 10})
    assert audit._join(first2, later2) == (15, "h15", "a14", True, [], {"seq": 13}, {"seq": 10})
    assert audit._join(first2, (5, "h15", None, False, [], None, None))[2:4] == (None, False)


def test_the_later_parts_are_checked_by_the_children_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts: None
) -> None:
    # the parent checks the first part; it checks a later one itself only when a child failed
    log, head = _log(tmp_path, 200)
    monkeypatch.setattr(audit, "_SPLIT_BYTES", 1)
    with log.open("rb") as f:
        bounds = audit._split(f, log.stat().st_size)
    me, calls = os.getpid(), []
    part = audit._Check.part

    def recording(self: object, start: int, end: int | None, n0: int, prev: str) -> object:
        if os.getpid() == me:
            calls.append((start, end, n0))
        return part(self, start, end, n0, prev)  # type: ignore[arg-type]

    monkeypatch.setattr(audit._Check, "part", recording)
    count, last, _, activated, event = audit.verify_chain(log, head)
    assert calls == [(0, bounds[0], 1)]
    assert count == 200 and activated is not None and activated["seq"] == 196
    assert event is not None and event["seq"] == 200 and last == digest(event_line(log, 200))


def event_line(log: Path, n: int) -> bytes:
    return log.read_bytes().splitlines(keepends=True)[n - 1]


def test_a_position_after_an_empty_line_hashes_that_line_alone(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"\nb\n\nc\n")
    assert audit._position(log, 1) == (2, digest(b"\n"))
    assert audit._position(log, 3) == (3, digest(b"b\n"))
    assert audit._position(log, 4) == (4, digest(b"\n"))


def test_a_part_whose_child_failed_is_checked_by_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts: None
) -> None:
    log, head = _log(tmp_path, 200)
    monkeypatch.setattr(audit, "_SPLIT_BYTES", 1 << 40)
    whole = audit.verify_chain(log, head, strict=True)
    monkeypatch.setattr(audit, "_SPLIT_BYTES", 1)
    collect = audit._Check._collect

    def lost(self: object, pid: int, fd: int, n0: int) -> None:
        collect(self, pid, fd, n0)  # type: ignore[arg-type]
        return None  # as if the child had died

    monkeypatch.setattr(audit._Check, "_collect", lost)
    assert audit.verify_chain(log, head, strict=True) == whole
    lines = log.read_bytes().splitlines(keepends=True)
    lines[170] = b"{oops\n"
    log.write_bytes(b"".join(lines))
    with pytest.raises(CheckFailed, match=r"^audit log line 171: not json$"):
        audit.verify_chain(log, head)


def _cuts(size: int, line: int, parts: int) -> list[int]:
    """Where ``_split`` should cut a log of ``line``-byte lines: just after the first newline
    at or past each part's target (a sixteenth of a part past an even share)."""
    cuts: list[int] = []
    for i in range(1, parts):
        target = size * i // parts + size // (parts * 16)
        at = -(-target // line) * line  # the next line start at or after the target
        if at >= size or (cuts and at <= cuts[-1]):
            break
        cuts.append(at)
    return cuts


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("line", [1, 64, 97, 1000])
def test_a_long_log_is_cut_just_after_a_newline_once_per_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int, line: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    log = tmp_path / "log"
    log.write_bytes((b"x" * (line - 1) + b"\n") * (12_000 // line))
    size = log.stat().st_size
    monkeypatch.setattr(audit, "_SPLIT_BYTES", size)
    with log.open("rb") as f:
        cuts = audit._split(f, size)
        parts = min(cores, audit._MAX_PARTS)
        assert cuts == _cuts(size, line, parts)
        if line < 1000:  # lines short against a part: every part gets its cut
            assert len(cuts) == parts - 1
        monkeypatch.setattr(audit, "_SPLIT_BYTES", size + 1)
        assert audit._split(f, size) == []  # below the threshold: one pass


def test_a_log_is_not_cut_where_no_newline_comes_soon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(audit, "_SPLIT_BYTES", 1)
    log = tmp_path / "log"
    # one newline just before the first target, then longer than any line without one
    size = 4 * (audit.MAX_LINE + 2)
    first = size // 4 + size // 64
    log.write_bytes(b"x" * (first - 1) + b"\n" + b"x" * (size - first))
    with log.open("rb") as f:
        assert audit._split(f, size) == [first]
    # the first two targets (1062, 2062) share their next newline: one cut; the third
    # target's newline ends the log: no cut there
    log.write_bytes(b"x" * 2999 + b"\n" + b"x" * 999 + b"\n")
    with log.open("rb") as f:
        assert audit._split(f, 4000) == [3000]
    # the second target's newline is the log's last byte: a part there would be empty
    log.write_bytes(b"x" * 1999 + b"\n" + b"x" * 1999 + b"\n")
    with log.open("rb") as f:
        assert audit._split(f, 4000) == [2000]


@pytest.mark.parametrize(("distance", "cut"), [(audit.MAX_LINE, True), (audit.MAX_LINE + 1, False)])
def test_a_cut_looks_one_line_length_past_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, distance: int, cut: bool
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(audit, "_SPLIT_BYTES", 1)
    size = 4 * audit.MAX_LINE
    target = size // 2 + size // 32
    newline = target - 1 + distance  # the one newline before the last byte
    log = tmp_path / "log"
    log.write_bytes(b"x" * newline + b"\n" + b"x" * (size - newline - 2) + b"\n")
    with log.open("rb") as f:
        assert audit._split(f, size) == ([newline + 1] if cut else [])
