"""The activation grant: what ``grant.read`` accepts, and the window arithmetic at its edges.

The login path trusts the grant by where it is and what it looks like, so
each refusal here is one that a planted or damaged file must meet.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from builder.core.canonical import dumps
from builder.host import grant
from tests.conftest import require_root

T0 = dt.datetime(2026, 11, 29, 19, 0, tzinfo=dt.UTC)
RECORD: dict[str, object] = {
    "request_id": "r", "scope": "s", "files": [], "activated_at": "2026-11-29T19:00:00Z",
    "expires_at": "2026-11-29T19:15:00Z", "boot_id": "b", "boot_seconds": 100,
}  # fmt: skip


def _write(root: Path, data: bytes, mode: int = 0o600) -> Path:
    path = root / grant.GRANT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


# ---- reading the grant -------------------------------------------------------------------


def test_read_returns_the_record_as_written(tmp_path: Path) -> None:
    assert grant.read(tmp_path) is None  # absent
    _write(tmp_path, dumps(RECORD))
    assert grant.read(tmp_path) == RECORD
    # group and others may read it (the AKC user does), and whitespace is no matter
    _write(tmp_path, json.dumps(RECORD, indent=2).encode(), 0o644)
    assert grant.read(tmp_path) == RECORD


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_read_refuses_a_grant_others_can_write(tmp_path: Path, mode: int) -> None:
    _write(tmp_path, dumps(RECORD), mode)
    assert grant.read(tmp_path) is None


def test_read_refuses_a_link_a_directory_and_a_fifo(tmp_path: Path) -> None:
    real = _write(tmp_path, dumps(RECORD)).rename(tmp_path / "real.json")
    (tmp_path / grant.GRANT).symlink_to(real)
    assert grant.read(tmp_path) is None
    (tmp_path / grant.GRANT).unlink()
    (tmp_path / grant.GRANT).mkdir()
    assert grant.read(tmp_path) is None
    (tmp_path / grant.GRANT).rmdir()
    os.mkfifo(tmp_path / grant.GRANT, 0o600)
    assert grant.read(tmp_path) is None  # and without blocking on the pipe
    # a pipe that holds a well-formed record is still not the unseal's file
    fd = os.open(tmp_path / grant.GRANT, os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(fd, dumps(RECORD))
        assert grant.read(tmp_path) is None
    finally:
        os.close(fd)


@pytest.mark.parametrize("uid", [1, 4321])
def test_read_refuses_a_grant_another_user_owns(tmp_path: Path, uid: int) -> None:
    require_root("chown to another user")
    path = _write(tmp_path, dumps(RECORD))
    os.chown(path, uid, -1)
    assert grant.read(tmp_path) is None
    os.chown(path, 0, -1)
    assert grant.read(tmp_path) == RECORD


@pytest.mark.parametrize("data", [
    b"", b"not json", b"[]", b'"s"', b"\xff\xfe",
    dumps({k: v for k, v in RECORD.items() if k != "boot_id"}),
    dumps({**RECORD, "extra": 1}),
])  # fmt: skip
def test_read_refuses_what_the_unseal_does_not_write(tmp_path: Path, data: bytes) -> None:
    _write(tmp_path, data)
    assert grant.read(tmp_path) is None


def test_read_accepts_up_to_max_bytes(tmp_path: Path) -> None:
    assert grant.MAX_BYTES == 64 * 1024
    # without the newline, so that a byte missed at the end breaks the json
    empty = len(dumps({**RECORD, "files": [""]}).rstrip(b"\n"))
    fits = dumps({**RECORD, "files": ["x" * (grant.MAX_BYTES - empty)]}).rstrip(b"\n")
    assert len(fits) == grant.MAX_BYTES
    _write(tmp_path, fits)
    assert grant.read(tmp_path) == json.loads(fits)
    _write(tmp_path, fits + b"\n")
    assert grant.read(tmp_path) is None


# ---- times and spans ---------------------------------------------------------------------


def test_parse_time_takes_only_utc_with_a_z() -> None:
    assert grant.parse_time("2026-11-29T19:00:00Z") == T0
    assert grant.parse_time("2026-11-29T19:00:00Z").tzinfo == dt.UTC  # type: ignore[union-attr]
    for bad in (None, 1, "", "Z", "2026-11-29T19:00:00", "2026-11-29T19:00:00+00:00",
                "2026-11-29T19:00:00+01:00Z", "2026-13-29T19:00:00Z"):  # fmt: skip
        assert grant.parse_time(bad) is None, bad


def test_span_seconds() -> None:
    assert grant.span_seconds(RECORD) == 900
    assert grant.span_seconds({**RECORD, "expires_at": "2026-11-29T18:59:00Z"}) == -60
    assert grant.span_seconds({**RECORD, "activated_at": "soon"}) is None
    assert grant.span_seconds({**RECORD, "expires_at": None}) is None
    assert grant.span_seconds({}) is None


# ---- the window --------------------------------------------------------------------------


def _problem(now: dt.datetime, boot: tuple[str, int], **change: object) -> object:
    return grant.window_problem({**RECORD, **change}, now, boot)


def test_window_is_open_from_activation_up_to_either_end() -> None:
    end = "2026-11-29T19:15:00Z"
    assert _problem(T0, ("b", 100)) is None  # the first second
    assert _problem(T0 + dt.timedelta(seconds=899), ("b", 999)) is None  # the last one
    assert _problem(T0 + dt.timedelta(seconds=900), ("b", 101)) == (
        "expired", {"expires_at": end, "by": "wall clock"})  # fmt: skip
    assert _problem(T0 + dt.timedelta(seconds=1), ("b", 1000)) == (
        "expired", {"expires_at": end, "by": "boot clock"})  # fmt: skip
    # both ends passed: the boot clock is named
    assert _problem(T0 + dt.timedelta(days=1), ("b", 10**6)) == (
        "expired", {"expires_at": end, "by": "boot clock"})  # fmt: skip


def test_window_clock_anomalies_say_what_was_found() -> None:
    end = "2026-11-29T19:15:00Z"
    assert _problem(T0 - dt.timedelta(seconds=1), ("b", 100)) == ("clock-anomaly", {
        "found": "the wall clock is earlier than the activation", "expires_at": end})  # fmt: skip
    assert _problem(T0, ("c", 100)) == ("clock-anomaly", {
        "found": "the host booted since the activation", "expires_at": end})  # fmt: skip
    assert _problem(T0, ("b", 99)) == ("clock-anomaly", {
        "found": "the boot clock runs backwards", "expires_at": end})  # fmt: skip


@pytest.mark.parametrize("change", [
    {"activated_at": "2026-11-29T19:00:00"}, {"expires_at": 0},
    {"expires_at": "2026-11-29T19:00:00Z"},  # an empty window
    {"expires_at": "2026-11-29T18:00:00Z"},
])  # fmt: skip
def test_window_malformed_is_tampered(change: dict[str, object]) -> None:
    assert _problem(T0, ("b", 100), **change) == (
        "tampered", {"found": "the active record's window is malformed"})  # fmt: skip


@pytest.mark.parametrize("change", [
    {"boot_id": None}, {"boot_id": 1}, {"boot_seconds": "100"}, {"boot_seconds": None},
    {"boot_seconds": True}, {"boot_seconds": 100.0},
])  # fmt: skip
def test_window_without_a_boot_reading_is_tampered(change: dict[str, object]) -> None:
    boot = ("b", 1)
    assert _problem(T0, boot, **change) == (
        "tampered", {"found": "the active record has no boot clock reading"})  # fmt: skip


def test_a_one_second_window() -> None:
    change = {"expires_at": "2026-11-29T19:00:01Z"}
    assert _problem(T0, ("b", 100), **change) is None
    assert _problem(T0, ("b", 101), **change) is not None


def test_seconds_left_is_the_earlier_end() -> None:
    now = T0 + dt.timedelta(seconds=10)
    assert grant.seconds_left(RECORD, now, ("b", 110)) == 890
    assert grant.seconds_left(RECORD, now, ("b", 300)) == 700  # the boot clock ran further
    assert grant.seconds_left(RECORD, T0 + dt.timedelta(seconds=600), ("b", 110)) == 300
    assert grant.seconds_left(RECORD, T0 + dt.timedelta(days=1), ("b", 110)) == 0
    assert grant.seconds_left(RECORD, now, ("b", 10_000)) == 0
    for change in ({"expires_at": None}, {"activated_at": "x"}, {"boot_seconds": "100"}):
        assert grant.seconds_left({**RECORD, **change}, now, ("b", 110)) == 0, change


def test_scope_cap() -> None:
    manifest = {"scopes": [
        "junk", {"name": "other", "max_ttl_seconds": 60}, {"name": "s", "max_ttl_seconds": 900},
        {"name": "s", "max_ttl_seconds": 5},
    ]}  # fmt: skip
    assert grant.scope_cap(manifest, "s") == 900  # the first scope of that name
    assert grant.scope_cap(manifest, "other") == 60
    assert grant.scope_cap(manifest, "none") is None
    for cap in (True, "900", 900.0, None):
        assert grant.scope_cap({"scopes": [{"name": "s", "max_ttl_seconds": cap}]}, "s") is None
    bad: object
    for bad in (None, [], "scopes", {"scopes": None}, {"scopes": {"s": {}}}, {}):
        assert grant.scope_cap(bad, "s") is None
