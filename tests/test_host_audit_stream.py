"""``audit verify`` reads the log line by line: the same verdicts as a whole-file parse,
and a bound on what one line may make it hold."""

from __future__ import annotations

import datetime as dt
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from builder.core.canonical import digest, dumps
from builder.core.errors import CheckFailed
from builder.host import audit
from builder.host.layout import Layout

T0 = dt.datetime(2026, 11, 29, 19, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def log(tmp_path: Path) -> Layout:
    layout = Layout(tmp_path)
    for n in range(4):
        audit.append(layout, T0, "test-event", details={"n": n}, who="tester")
    return layout


def _lines(layout: Layout) -> list[bytes]:
    return layout.audit.read_bytes().splitlines(keepends=True)


def test_a_line_longer_than_any_event_is_refused_without_reading_it_whole(log: Layout) -> None:
    lines = _lines(log)
    lines.insert(2, b"x" * (audit.MAX_LINE + 10) + b"\n")
    log.audit.write_bytes(b"".join(lines))
    with pytest.raises(CheckFailed, match="audit log line 3: longer than any event"):
        audit.verify(log)


@pytest.mark.parametrize(
    ("replacement", "message"),
    [
        (b"null\n", "line 2: not an audit event"),
        (b"{not json\n", "line 2: not json"),
        (b"\xff\xfe\n", "line 2: not json"),
        (b"}x\n", "line 2: not json"),  # an event followed by more
        (b"} x\n", "line 2: not json"),
    ],
)
def test_odd_lines_get_the_same_verdicts(log: Layout, replacement: bytes, message: str) -> None:
    lines = _lines(log)
    lines[1] = lines[1][:-2] + replacement if replacement.startswith(b"}") else replacement
    log.audit.write_bytes(b"".join(lines))
    with pytest.raises(CheckFailed, match=message):
        audit.verify(log)


@pytest.mark.parametrize("number", [b"Infinity", b"-Infinity", b"NaN"])
def test_a_number_json_has_no_word_for_is_refused(log: Layout, number: bytes) -> None:
    lines = _lines(log)
    lines[1] = lines[1].replace(b'{"n":1}', b'{"n":' + number + b"}")
    assert number in lines[1]
    log.audit.write_bytes(b"".join(lines))
    with pytest.raises(
        CheckFailed, match=r"line 2: not an audit event \(invalid unicode or number\)"
    ):
        audit.verify(log)


def test_whitespace_in_a_valid_event_is_an_edit(log: Layout) -> None:
    lines = _lines(log)
    lines[1] = b" " + lines[1]
    log.audit.write_bytes(b"".join(lines))
    with pytest.raises(CheckFailed, match="line 2: not in canonical form"):
        audit.verify(log)


def test_the_head_is_matched_while_streaming(log: Layout) -> None:
    result = audit.verify(log)
    assert result.events == 4
    lines = _lines(log)
    # the head names line 4; a log cut back to line 3 is found, as is an extra tail
    log.audit.write_bytes(b"".join(lines[:3]))
    with pytest.raises(CheckFailed, match="head records line 4"):
        audit.verify(log)


@pytest.mark.parametrize(
    "document",
    [
        {"a": 1, "b": [1.5, -0.0, 1e300, 2**70, None, True], "é": 'ü\u2028\x00"\\', "z": {"y": {}}},
        {"seq": 1, "details": {"reason": "tab\there", "n": [3, 2, 1]}, "scope": None},
        [],
        "text",
    ],
)
def test_the_verify_encoder_is_the_canonical_one(document: object) -> None:
    from builder.core.canonical import dumps

    assert audit._canonical(document) == dumps(document)
    # built afresh too: the module builds it once, at import
    assert audit._make_canonical()(document) == dumps(document)


def test_the_verify_encoder_refuses_what_json_cannot_hold() -> None:
    canonical = audit._make_canonical()
    with pytest.raises(TypeError, match="not json: set"):
        canonical({"a": {1}})
    assert canonical({"b": 1, "a": "\u00e9"}) == '{"a":"\u00e9","b":1}\n'.encode()


def test_the_verify_encoder_keeps_what_dumps_keeps_and_refuses_what_it_refuses() -> None:
    from builder.core.canonical import dumps

    canonical = audit._make_canonical()
    for number in (float("inf"), -float("inf"), float("nan")):
        with pytest.raises(ValueError):
            dumps({"n": [number]})
        with pytest.raises(ValueError):
            canonical({"n": [number]})  # json's word for it is not canonical
    with pytest.raises(TypeError):
        dumps({(1, 2): "a"})
    with pytest.raises(TypeError):
        canonical({(1, 2): "a"})  # a key json cannot hold is refused, not skipped


def test_the_verify_scanner_reads_plain_json() -> None:
    scan = audit._plain_scanner()
    assert scan('{"a":[1,2.5,null]}\n', 0) == ({"a": [1, 2.5, None]}, 18)
    assert scan("[NaN]", 0)[0][0] != scan("[NaN]", 0)[0][0]  # NaN, as json.loads reads it


_EDITS: list[tuple[int, bytes, bytes, str | None]] = [
    # (line, old, new, first error): each checked in blocks cut at every size below
    (0, b"", b"", None),
    (2, b'"n":1', b'"n":"\xc3\xa9"', "line 2: edited, or lines removed"),  # not ASCII, edited
    (2, b'"n":1', b'"n":"\\u00e9"', "line 2: not in canonical form"),  # escaped, not canonical
    (2, b'"n":1', b'"n":"\\ud800"', "line 2: not an audit event"),
    (3, b'"n":2', b'"n" :2', "line 3: not in canonical form"),
    (3, b'"n":2', b'"n":\n2', "line 3: not json"),  # a newline inside the object
    (4, b"\n", b"", "line 4: not json"),  # two events on one line
    (5, b"\n", b"", "line 5: truncated"),
    (4, b'"seq":4', b'"seq":5', "line 4: sequence number 5"),
]


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize(("n", "old", "new", "message"), _EDITS)
def test_any_block_size_gives_the_verdict_of_one_line_at_a_time(
    log: Layout,
    monkeypatch: pytest.MonkeyPatch,
    block: int,
    n: int,
    old: bytes,
    new: bytes,
    message: str | None,
) -> None:
    # ASCII blocks are checked in place, anything else line by line: both read alike
    monkeypatch.setattr(audit, "_BLOCK", block)
    audit.append(log, T0, "test-event", details={"n": "\u00e9"}, who="tester")  # line 5: UTF-8
    lines = _lines(log)
    if n:
        lines[n - 1] = lines[n - 1].replace(old, new, 1)
        assert new in lines[n - 1]
    log.audit.write_bytes(b"".join(lines))
    if message is None:
        assert audit.verify(log) == audit.Verified(5, digest(lines[-1]))
    else:
        with pytest.raises(CheckFailed, match=f"^audit log {message}"):
            audit.verify(log)


def _chain(count: int, pad: int = 0) -> list[bytes]:
    """``count`` chained events, each padded with ``pad`` bytes in its details."""
    prev, lines = audit.GENESIS, []
    for seq in range(1, count + 1):
        line = dumps({"seq": seq, "time": "2026-11-29T19:00:00Z", "event": "test-event", "actor": "tester",
                      "request_id": None, "scope": None, "details": {"pad": "x" * pad}, "prev": prev})  # fmt: skip
        lines.append(line)
        prev = digest(line)
    return lines


def _padded(seq: int, prev: str, length: int) -> bytes:
    """Event ``seq``, chained to ``prev``, padded to a line of exactly ``length`` bytes."""
    line = (
        _chain(1)[0]
        .replace(b'"seq":1', b'"seq":%d' % seq)
        .replace(audit.GENESIS.encode(), prev.encode())
    )
    return line.replace(b'"pad":""', b'"pad":"' + b"x" * (length - len(line)) + b'"')


def _write(tmp_path: Path, lines: list[bytes]) -> tuple[Path, Path]:
    log, head = tmp_path / "audit.jsonl", tmp_path / "audit.head"
    log.write_bytes(b"".join(lines))
    head.write_bytes(dumps({"seq": len(lines), "head": digest(lines[-1])}))
    return log, head


def test_a_valid_ascii_log_is_checked_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # over a block (1 MiB) of lines: none is left to the line-by-line check, however deep
    # into its block it starts; that check is what a line that fails in place gets
    lines = _chain(3000, pad=300)
    log, head = _write(tmp_path, lines)
    judged: list[int] = []
    check_line = audit._check_line

    def counted(n: int, line: bytes, prev: str) -> dict[str, Any]:
        judged.append(n)
        return check_line(n, line, prev)

    monkeypatch.setattr(audit, "_check_line", counted)
    count, prev, *_ = audit.verify_chain(log, head)
    assert (count, prev) == (3000, digest(lines[-1]))
    assert judged == []
    log.write_bytes(b"".join(lines).replace(b'"seq":2000,', b'"seq":2001,'))
    with pytest.raises(CheckFailed, match="line 2000: sequence number 2001"):
        audit.verify_chain(log, head)
    assert judged == [2000]


@pytest.mark.parametrize(("extra", "message"), [(0, None), (1, "line 2: longer than any event")])
def test_the_longest_line_is_max_line_bytes(
    tmp_path: Path, extra: int, message: str | None
) -> None:
    first = _chain(1)[0]
    second = _padded(2, digest(first), audit.MAX_LINE + extra)
    assert len(second) == audit.MAX_LINE + extra
    log, head = _write(tmp_path, [first, second])
    if message is None:
        assert audit.verify_chain(log, head)[:2] == (2, digest(second))
    else:
        with pytest.raises(CheckFailed, match=message):
            audit.verify_chain(log, head)


@pytest.mark.parametrize(
    ("length", "message"),
    [(audit.MAX_LINE, "line 2: truncated"), (audit.MAX_LINE + 1, "line 2: longer than any event")],
)
def test_an_unfinished_last_line_is_too_long_only_past_max_line(
    tmp_path: Path, length: int, message: str
) -> None:
    first = _chain(1)[0]
    log, head = _write(tmp_path, [first])
    log.write_bytes(first + b"x" * length)
    with pytest.raises(CheckFailed, match=message):
        audit.verify_chain(log, head)


def test_an_empty_first_line_is_not_json(tmp_path: Path) -> None:
    # not the empty line and the event after it read as one (json.loads skips the newline)
    lines = _chain(1)
    log, head = _write(tmp_path, lines)
    log.write_bytes(b"\n" + lines[0])
    with pytest.raises(CheckFailed, match="line 1: not json"):
        audit.verify_chain(log, head)


def test_a_part_stops_at_its_end_whatever_the_block_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = _chain(6)
    log, _ = _write(tmp_path, lines)
    start = len(lines[0] + lines[1])
    end = start + len(lines[2] + lines[3])
    n0, prev = audit._position(log, start)
    assert (n0, prev) == (3, digest(lines[1]))
    check = audit._Check(log, None, None, False, False, audit._line_hasher(0))
    for block in range(1, 2 * len(lines[0]) + 3):
        monkeypatch.setattr(audit, "_BLOCK", block)
        assert check.part(start, end, n0, prev)[:2] == (2, digest(lines[3])), block
        assert check.part(0, start, 1, audit.GENESIS)[:2] == (2, digest(lines[1])), block


@pytest.mark.parametrize("block", [1, 64, 1 << 20])
@pytest.mark.parametrize("which", [0, 1])
def test_a_part_that_ends_inside_a_line_means_the_log_was_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int, which: int
) -> None:
    # _split cuts just after a newline; a cut inside a line is what a rewrite under the
    # check leaves: the first part (checked here) or a later one (by a child) finds it
    lines = _chain(6)
    log, head = _write(tmp_path, lines)
    inside = len(b"".join(lines[:3])) + 10
    bounds = [inside, inside + 100] if which == 0 else [len(lines[0]), inside]
    monkeypatch.setattr(audit, "_BLOCK", block)
    monkeypatch.setattr(audit, "_split", lambda log, size: bounds)
    with pytest.raises(CheckFailed, match=r"^the audit log changed while it was being verified$"):
        audit.verify_chain(log, head)


def test_verify_holds_a_block_not_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "_BLOCK", 4096)
    lines = _chain(2000, pad=200)
    log, head = _write(tmp_path, lines)
    assert log.stat().st_size > 600_000
    tracemalloc.start()
    try:
        assert audit.verify_chain(log, head)[0] == 2000
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200_000
