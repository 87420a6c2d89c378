"""The audit chain's edge rules: who acts, an absent or emptied log, the head's one-line grace."""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import stat
from pathlib import Path

import pytest

from builder.core.canonical import digest, dumps
from builder.core.errors import CheckFailed, StateError
from builder.host import audit
from builder.host.layout import Layout

T0 = dt.datetime(2026, 11, 29, 19, 0, 0, tzinfo=dt.UTC)


def _host(tmp_path: Path, events: int) -> Layout:
    layout = Layout(tmp_path)
    layout.manifest.parent.mkdir(parents=True)
    layout.manifest.write_text("{}")
    for n in range(events):
        audit.append(layout, T0, "test-event", details={"n": n}, who="tester")
    return layout


def test_actor_is_the_user_or_who_ran_sudo(monkeypatch: pytest.MonkeyPatch) -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert audit.actor() == me
    monkeypatch.setenv("SUDO_USER", "alice")
    assert audit.actor() == f"alice (via {me})"


def test_actor_without_a_passwd_entry_is_the_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(uid: int) -> pwd.struct_passwd:
        raise KeyError(uid)

    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", unknown)
    assert audit.actor() == f"uid:{os.geteuid()}"


def test_a_fresh_host_without_a_log_verifies_empty(tmp_path: Path) -> None:
    result = audit.verify(_host(tmp_path, 0))
    assert (result.events, result.head) == (0, audit.GENESIS)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("state", "the audit log is missing but the host has a state file"),
        ("requests", "the audit log is missing but the host has requests"),
        ("empty-log", "the audit log is empty but the host has a state file"),
    ],
)
def test_a_log_gone_beside_a_state_or_requests_is_refused(
    tmp_path: Path, make: str, message: str
) -> None:
    layout = _host(tmp_path, 0)
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    if make in ("state", "empty-log"):
        layout.state.write_text("{}")
    if make == "requests":
        layout.requests.mkdir(parents=True)
        (layout.requests / "x.json").write_text("{}")
    if make == "empty-log":
        layout.audit.write_bytes(b"")
    with pytest.raises(CheckFailed) as err:
        audit.verify(layout)
    assert err.value.message == f"{message} (the log was removed or truncated)"


def test_an_empty_requests_folder_is_no_history(tmp_path: Path) -> None:
    layout = _host(tmp_path, 0)
    layout.requests.mkdir(parents=True)
    assert audit.verify(layout).events == 0


def test_a_line_that_is_not_an_event_is_named(tmp_path: Path) -> None:
    layout = _host(tmp_path, 1)
    layout.audit.write_bytes(layout.audit.read_bytes() + dumps({"seq": 2}))
    with pytest.raises(CheckFailed) as err:
        audit.verify(layout)
    assert err.value.message == "audit log line 2: not an audit event"


def test_the_head_may_lag_one_line_not_two(tmp_path: Path) -> None:
    layout = _host(tmp_path, 3)
    lines = layout.audit.read_bytes().splitlines(keepends=True)
    from builder.core.canonical import digest

    # a crash between the append and the head update leaves the head one line behind
    layout.audit_head.write_bytes(dumps({"seq": 2, "head": digest(lines[1])}))
    assert audit.verify(layout).events == 3
    layout.audit_head.write_bytes(dumps({"seq": 1, "head": digest(lines[0])}))
    with pytest.raises(CheckFailed) as err:
        audit.verify(layout)
    assert err.value.message == "audit log line 1: does not match the recorded head (edited)"


def test_read_events_names_the_bad_line(tmp_path: Path) -> None:
    layout = _host(tmp_path, 2)
    layout.audit.write_bytes(layout.audit.read_bytes() + b"{not json\n")
    with pytest.raises(CheckFailed) as err:
        audit.read_events(layout)
    assert err.value.message == "audit log line 3: not json"


def test_the_last_line_is_found_past_a_long_one(tmp_path: Path) -> None:
    layout = _host(tmp_path, 0)
    audit.append(layout, T0, "long", details={"pad": "x" * 10000}, who="tester")
    head = audit.append(layout, T0, "short", who="tester")
    assert audit.verify(layout).head == head
    assert [e["seq"] for e in audit.read_events(layout)] == [1, 2]


def test_a_verified_log_compares_by_its_count_and_head() -> None:
    a = audit.Verified(3, "sha256:aa")
    assert a == audit.Verified(3, "sha256:aa") and hash(a) == hash(audit.Verified(3, "sha256:aa"))
    assert a != audit.Verified(4, "sha256:aa") and a != audit.Verified(3, "sha256:bb")
    assert a != (3, "sha256:aa")
    assert hash(a) == hash((3, "sha256:aa"))
    assert len({a, audit.Verified(3, "sha256:aa"), audit.Verified(4, "sha256:aa")}) == 2
    assert repr(a) == "Verified(events=3, head='sha256:aa')"


def test_recordings_are_checked_only_when_asked(tmp_path: Path) -> None:
    layout = _host(tmp_path, 1)
    files = [{"name": "gone.cast", "sha256": "0" * 64, "size": 1}]
    audit.append(layout, T0, "session-recorded", details={"files": files}, who="tester")
    audit.append(layout, T0, "test-event", who="tester")
    assert audit.verify(layout).events == 3  # the activation check hashes no recording
    with pytest.raises(CheckFailed, match=r"^recording gone.cast \(audit log line 2\): deleted$"):
        audit.verify(layout, recordings=True)
    _, _, recorded, _, _ = audit.verify_chain(layout.audit, layout.audit_head, recordings=True)
    assert [e["seq"] for e in recorded] == [2]
    assert audit.verify_chain(layout.audit, layout.audit_head)[2] == []


def test_strict_also_requires_details_to_be_an_object(tmp_path: Path) -> None:
    layout = _host(tmp_path, 2)
    lines = layout.audit.read_bytes().splitlines(keepends=True)
    prev = audit.GENESIS
    rewritten = []
    for n, line in enumerate(lines, start=1):
        doc = json.loads(line)
        doc["prev"] = prev
        if n == 2:
            doc["event"], doc["details"] = "activated", "not an object"
        line = dumps(doc)
        rewritten.append(line)
        prev = digest(line)
    layout.audit.write_bytes(b"".join(rewritten))
    layout.audit_head.write_bytes(dumps({"seq": 2, "head": prev}))
    count, head, _, activated, last = audit.verify_chain(layout.audit, layout.audit_head)
    assert (count, head) == (2, prev)
    assert activated is None  # an activation without details names no window
    assert last is not None and last["seq"] == 2
    with pytest.raises(CheckFailed, match=r"^audit log line 2: not an audit event$"):
        audit.verify_chain(layout.audit, layout.audit_head, strict=True)


def test_a_line_of_exactly_max_line_bytes_is_judged_as_any_other(tmp_path: Path) -> None:
    layout = _host(tmp_path, 0)
    layout.audit.parent.mkdir(parents=True, exist_ok=True)
    layout.audit.write_bytes(b"x" * (audit.MAX_LINE - 1) + b"\n")
    with pytest.raises(CheckFailed, match=r"^audit log line 1: not json$"):
        audit.verify(layout)
    layout.audit.write_bytes(b"x" * audit.MAX_LINE + b"\n")
    with pytest.raises(CheckFailed, match=r"^audit log line 1: longer than any event"):
        audit.verify(layout)


def test_a_head_record_that_is_not_utf8_is_malformed(tmp_path: Path) -> None:
    layout = _host(tmp_path, 2)
    layout.audit_head.write_bytes(b"\xff\xfe")
    with pytest.raises(CheckFailed, match=r"^audit head record is malformed$"):
        audit.verify(layout)


@pytest.mark.parametrize(
    ("change", "drop"), [({"details": "text"}, None), ({}, "scope"), ({}, "details")]
)
def test_read_events_refuses_a_line_that_is_not_an_event(
    tmp_path: Path, change: dict[str, object], drop: str | None
) -> None:
    layout = _host(tmp_path, 2)
    lines = layout.audit.read_bytes().splitlines(keepends=True)
    doc = {**json.loads(lines[1]), **change}
    if drop:
        del doc[drop]
    layout.audit.write_bytes(lines[0] + dumps(doc))
    with pytest.raises(CheckFailed, match=r"^audit log line 2: not an audit event$"):
        audit.read_events(layout)


def test_append_after_a_first_line_longer_than_one_read(tmp_path: Path) -> None:
    # the last line is found by reading backwards 4096 bytes at a time: one of 4097 bytes
    # (and of 4096 + 4097) is read whole
    for size in (4097, 4096 + 4097, 4095):
        layout = _host(tmp_path / str(size), 0)
        pad = "x" * (size - len(dumps({"seq": 1, "time": "2026-11-29T19:00:00Z",
                                       "event": "e", "actor": "tester", "request_id": None,
                                       "scope": None, "details": {"p": ""},
                                       "prev": audit.GENESIS})))  # fmt: skip
        audit.append(layout, T0, "e", details={"p": pad}, who="tester")
        assert layout.audit.stat().st_size == size
        audit.append(layout, T0, "e", who="tester")
        assert audit.verify(layout).events == 2


def test_an_empty_log_names_no_event_and_a_state_file_beside_a_log_is_fine(
    tmp_path: Path,
) -> None:
    layout = Layout(tmp_path)
    assert audit.verify_chain(layout.audit, layout.audit_head) == (0, audit.GENESIS, [], None, None)
    layout = _host(tmp_path, 2)
    layout.state.write_bytes(b"{}")
    assert audit.verify(layout).events == 2


def test_append_writes_log_and_head_0640_and_names_the_actor(tmp_path: Path) -> None:
    layout = _host(tmp_path, 0)
    audit.append(layout, T0, "test-event")  # no ``who``: the actor is whoever runs it
    for path in (layout.audit, layout.audit_head):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path.name
    (event,) = audit.read_events(layout)
    assert event["actor"] == audit.actor()


def test_append_refuses_a_state_directory_others_may_write(tmp_path: Path) -> None:
    layout = _host(tmp_path, 1)
    layout.state_dir.chmod(0o777)
    before = layout.audit.read_bytes()
    with pytest.raises(
        StateError, match=r"unsafe directory var/lib/breakglass: it is writable by group or others"
    ):
        audit.append(layout, T0, "test-event", who="tester")
    assert layout.audit.read_bytes() == before


@pytest.mark.parametrize(
    ("text", "last"),
    [
        (b"one\ntwo\n", b"two\n"),
        (b"one\ntwo", b"two"),  # a torn append: the partial line as it is, nothing added
        (b"two", b"two"),
        (b"one\n" + b"x" * 5000, b"x" * 5000),
    ],
)
def test_the_last_line_is_read_as_written(tmp_path: Path, text: bytes, last: bytes) -> None:
    path = tmp_path / "log"
    path.write_bytes(text)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert audit._last_line(fd) == last
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("text", "most_bytes", "most_reads"),
    [
        (b"".join(b"%099d\n" % i for i in range(10_000)), 4096, 1),  # 1 MB of short lines: a page
        (b"a" * 2999 + b"\n" + b"b" * 2999 + b"\n", 4096, 1),  # the page holds both newlines
        (b"a\n" + b"b" * 100_000 + b"\n", 200_000, 6),  # a long line: reads that double
    ],
)
def test_the_last_line_is_found_reading_from_the_end_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: bytes, most_bytes: int, most_reads: int
) -> None:
    # an append reads the line it chains to; its cost must not grow with the log
    path = tmp_path / "log"
    path.write_bytes(text)
    reads: list[int] = []
    pread = os.pread

    def counted(fd: int, n: int, offset: int) -> bytes:
        reads.append(n)
        return pread(fd, n, offset)

    fd = os.open(path, os.O_RDONLY)
    try:
        monkeypatch.setattr(os, "pread", counted)
        assert audit._last_line(fd) == text[text.rfind(b"\n", 0, -1) + 1 :]
    finally:
        os.close(fd)
    assert sum(reads) <= most_bytes and len(reads) <= most_reads
