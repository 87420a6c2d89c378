"""The audit store and pull checks without hosts: chain continuation, divergence, store integrity."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from builder.core.canonical import digest
from builder.core.errors import InputError
from builder.fleet.audit_pull import Answer, first_difference, settle
from builder.fleet.audit_store import AuditStore
from builder.fleet.inventory import HostResult
from builder.host import audit
from builder.host.layout import Layout

NOW = dt.datetime(2026, 11, 29, 19, 0, 0, tzinfo=dt.UTC)


def log(tmp: Path, events: list[str]) -> bytes:
    layout = Layout(tmp)
    for e in events:
        audit.append(layout, NOW, e, who="root")
    return layout.audit.read_bytes()


def test_a_valid_extension_is_accepted_then_a_broken_one_is_not(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "store")
    data = log(tmp_path / "h", ["request-created", "approval-accepted"])
    first = settle(store, HostResult("h", True, Answer(True, data)), store.collected("h"), NOW)
    assert (first.status, first.new_events, first.events) == ("accepted", 2, 2)
    more = log(tmp_path / "h", ["activated"])[len(data) :]
    bad = more.replace(b'"seq":3', b'"seq":4')
    broken = settle(store, HostResult("h", True, Answer(True, bad)), store.collected("h"), NOW)
    assert broken.status == "broken" and broken.detail == "event 3: sequence number 4"
    assert store.collected("h").data == data
    ok = settle(store, HostResult("h", True, Answer(True, more)), store.collected("h"), NOW)
    assert ok.status == "accepted" and store.collected("h").data == data + more
    assert store.collected("h").head == digest((data + more).splitlines(keepends=True)[-1])


def test_a_partial_last_line_waits_for_the_next_pull(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "store")
    data = log(tmp_path / "h", ["request-created", "request-cancelled"])
    cut = data[:-5]
    r = settle(store, HostResult("h", True, Answer(True, cut)), store.collected("h"), NOW)
    assert r.status == "accepted" and r.events == 1


def test_first_difference_kinds() -> None:
    a = [b'{"seq":1}\n', b'{"seq":2}\n', b'{"seq":3}\n']
    assert first_difference(b"".join(a), b"".join(a[:2]))["kind"] == "truncated"
    assert first_difference(b"".join(a), b"")["line"] == 1
    edited = [a[0], b'{"seq":2,"x":1}\n', a[2]]
    assert first_difference(b"".join(a), b"".join(edited)) | {"kept": None, "host": None} == {
        "line": 2, "kind": "edited", "kept": None, "host": None,
    }  # fmt: skip
    assert first_difference(b"".join(a), b'{"seq":9}\n')["kind"] == "rewritten"


def test_an_altered_store_object_is_refused(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "store")
    data = log(tmp_path / "h", ["request-created"])
    with store.locked():
        settle(store, HostResult("h", True, Answer(True, data)), store.collected("h"), NOW)
    obj = next((tmp_path / "store/objects").iterdir())
    obj.chmod(0o644)
    obj.write_bytes(data.replace(b"request-created", b"request-cancelld"))
    with pytest.raises(InputError, match="does not match its digest"):
        store.collected("h")


def test_unreachable_host_changes_nothing(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "store")
    r = settle(store, HostResult("h", False, error="refused"), store.collected("h"), NOW)
    assert r.status == "unreachable" and r.ok and store.records("h") == []


def test_a_pull_record_removed_from_the_store_is_found(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "store")
    first = log(tmp_path / "h", ["request-created"])
    settle(store, HostResult("h", True, Answer(True, first)), store.collected("h"), NOW)
    more = log(tmp_path / "h", ["request-cancelled"])[len(first) :]
    settle(store, HostResult("h", True, Answer(True, more)), store.collected("h"), NOW)
    records = tmp_path / "store/hosts/h/pulls.jsonl"
    lines = records.read_bytes().splitlines(keepends=True)
    records.write_bytes(lines[1])
    with pytest.raises(InputError, match="does not match its records"):
        store.collected("h")
