"""Request and approval documents (``builder.approval.request``): exact round trips, and each rule that refuses one."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from builder.approval import request as request_mod
from builder.approval.quorum import Group
from builder.approval.request import (
    APPROVAL_ARMOR,
    MAX_REASON,
    REQUEST_ARMOR,
    Approval,
    ImageRef,
    UnsealRequest,
    format_time,
    load_approval,
    load_request,
    parse_time,
)
from builder.core import bounded
from builder.core.canonical import digest, dumps
from builder.core.errors import InputError

T0 = dt.datetime(2026, 11, 29, 19, 0, 0, tzinfo=dt.UTC)
REQUEST: dict[str, Any] = {
    "format": "breakglass-request/1",
    "id": "0123456789abcdef0123456789abcdef",
    "image": {"name": "example", "version": "1.0.0", "manifest_digest": "sha256:" + "a" * 64},
    "scope": "ssh-emergency",
    "ttl_seconds": 600,
    "reason": "db down",
    "requester": "dave",
    "created_at": "2026-11-29T19:00:00Z",
    "not_after": "2026-11-29T19:30:00Z",
    "ephemeral_recipient": "age1recipient",
    "group_threshold": 2,
    "groups": [
        {"name": "sre", "threshold": 1, "members": ["alice", "bob"]},
        {"name": "ops", "threshold": 1, "members": ["carol"]},
    ],
    "shares": {"alice": "ct-a", "bob": "ct-b", "carol": "ct-c"},
}
APPROVAL: dict[str, Any] = {
    "format": "breakglass-approval/1",
    "request_id": "0123456789abcdef0123456789abcdef",
    "request_digest": "sha256:" + "b" * 64,
    "approver": "alice",
    "approved_at": "2026-11-29T19:01:00Z",
    "not_after": "2026-11-29T19:30:00Z",
    "share": "ct",
    "signature": "sig",
}


def test_request_round_trips_exactly() -> None:
    r = UnsealRequest.from_dict(copy.deepcopy(REQUEST))
    assert r.id == REQUEST["id"] and r.scope == "ssh-emergency" and r.ttl_seconds == 600
    assert r.image == ImageRef("example", "1.0.0", "sha256:" + "a" * 64)
    assert (r.reason, r.requester, r.ephemeral_recipient) == ("db down", "dave", "age1recipient")
    assert (r.created_at, r.not_after) == (T0, T0 + dt.timedelta(minutes=30))
    assert r.group_threshold == 2
    assert r.groups == (Group("sre", 1, ("alice", "bob")), Group("ops", 1, ("carol",)))
    assert r.shares == REQUEST["shares"]
    assert r.to_dict() == REQUEST
    assert r.canonical() == dumps(REQUEST)
    assert r.digest == digest(dumps(REQUEST))
    assert r.armored().startswith(REQUEST_ARMOR) and "=" not in r.armored()
    assert load_request(r.armored()) == r


def test_approval_round_trips_and_signs_everything_but_its_signature() -> None:
    a = Approval.from_dict(dict(APPROVAL))
    assert (a.request_id, a.request_digest, a.approver) == (
        APPROVAL["request_id"], APPROVAL["request_digest"], "alice",
    )  # fmt: skip
    assert (a.approved_at, a.not_after) == (
        T0 + dt.timedelta(minutes=1),
        T0 + dt.timedelta(minutes=30),
    )
    assert (a.share, a.signature) == ("ct", "sig")
    assert a.to_dict() == APPROVAL
    unsigned = {k: v for k, v in APPROVAL.items() if k != "signature"}
    assert a.unsigned_dict() == unsigned
    assert a.signed_bytes() == dumps(unsigned)
    assert a.canonical() == dumps(APPROVAL)
    assert a.digest == digest(dumps(APPROVAL))
    assert a.armored().startswith(APPROVAL_ARMOR)
    assert load_approval(a.armored()) == a


def test_documents_load_from_files_and_armored_lines(tmp_path: Path) -> None:
    r = UnsealRequest.from_dict(copy.deepcopy(REQUEST))
    plain = tmp_path / "r.json"
    plain.write_bytes(r.canonical())
    armored = tmp_path / "r.txt"
    armored.write_text("\n  " + r.armored()[:40] + "\n" + r.armored()[40:] + "\n")
    assert load_request(str(plain)) == r
    assert load_request(str(armored)) == r
    a = Approval.from_dict(dict(APPROVAL))
    path = tmp_path / "a.json"
    path.write_text(json.dumps(APPROVAL))
    assert load_approval(str(path)) == a
    assert load_approval("  " + a.armored() + "\n") == a


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (REQUEST_ARMOR + "!!!", "request is neither json nor an armored line"),
        (REQUEST_ARMOR + "e30", "not a breakglass-request/1 document"),  # "{}"
        (REQUEST_ARMOR + "W10", "request must be a json object"),  # "[]"
        (REQUEST_ARMOR + "_w", "request is neither json nor an armored line"),  # not utf-8
        (REQUEST_ARMOR + "a", "malformed armored request"),
    ],
)
def test_bad_armored_requests(source: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        load_request(source)
    assert err.value.message.startswith(message), err.value.message


def test_unreadable_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        load_request(str(tmp_path / "nope.json"))
    assert (
        err.value.message
        == f"{tmp_path}/nope.json: cannot read request (No such file or directory)"
    )
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(InputError) as err:
        load_approval(str(bad))
    assert err.value.message == f"{bad}: cannot read approval (unreadable)"
    bad.write_text("{")
    with pytest.raises(InputError) as err:
        load_approval(str(bad))
    assert err.value.message == "approval is neither json nor an armored line"


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    target: Any = doc
    for p in parents:
        target = target[int(p)] if isinstance(target, list) else target[p]
    if value is DELETE:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return doc


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("format", "breakglass-request/2", "not a breakglass-request/1 document"),
        ("extra", 1, "request: unknown field 'extra'"),
        ("reason", DELETE, "request: missing field 'reason'"),
        ("id", "0123", "request: id must be 32 lowercase hex digits"),
        ("id", "0123456789ABCDEF0123456789ABCDEF", "request: id must be 32 lowercase hex digits"),
        ("id", "0123456789abcdef0123456789abcdef\n", "request: id must be 32 lowercase hex digits"),
        ("id", "", "request: id must be a non-empty string"),
        ("id", 5, "request: id must be a non-empty string"),
        ("image", "x", "request: image must be an object"),
        ("image.digest", "x", "request image: unknown field 'digest'"),
        ("image.version", "", "request image: version must be a non-empty string"),
        ("image.name", 1, "request image: name must be a non-empty string"),
        (
            "image.manifest_digest",
            None,
            "request image: manifest_digest must be a non-empty string",
        ),
        ("scope", 5, "request: scope must be a non-empty string"),
        ("scope", "a b", "request: scope is not a valid name"),
        ("scope", "-x", "request: scope is not a valid name"),
        ("scope", "x" * 65, "request: scope is not a valid name"),
        ("requester", "dave\n", "request: requester is not a valid name"),
        ("ttl_seconds", 0, "request: ttl_seconds must be a positive integer"),
        ("ttl_seconds", True, "request: ttl_seconds must be a positive integer"),
        ("ttl_seconds", "600", "request: ttl_seconds must be a positive integer"),
        ("ttl_seconds", 1.5, "request: ttl_seconds must be a positive integer"),
        ("reason", "", "request: reason must be a non-empty string"),
        ("ephemeral_recipient", [], "request: ephemeral_recipient must be a non-empty string"),
        ("created_at", 5, "request created_at must be a time string"),
        ("not_after", "2026-11-29 19:30:00", "request not_after is not an rfc 3339 utc time"),
        (
            "created_at",
            "2026-11-29T19:00:00+01:00",
            "request created_at is not an rfc 3339 utc time",
        ),
        ("group_threshold", 3, "request: group_threshold exceeds the number of groups"),
        ("group_threshold", 0, "request: group_threshold must be a positive integer"),
        ("groups", [], "request: groups must be a non-empty list"),
        ("groups", {"name": "sre"}, "request: groups must be a non-empty list"),
        ("groups.0", "sre", "request: a group must be an object"),
        ("groups.0.extra", 1, "request: unknown field 'extra'"),
        ("groups.0.members", [], "request: group members must be a non-empty list of names"),
        ("groups.0.members", "alice", "request: group members must be a non-empty list of names"),
        (
            "groups.0.members",
            ["alice", 7],
            "request: group members must be a non-empty list of names",
        ),
        (
            "groups.0.members",
            ["alice", "b b"],
            "request: group members must be a non-empty list of names",
        ),
        ("groups.0.threshold", 3, "request: group sre threshold exceeds its members"),
        ("groups.0.threshold", 0, "request: threshold must be a positive integer"),
        ("groups.0.name", "", "request: name must be a non-empty string"),
        ("shares", {}, "request: shares must map approver names to ciphertext"),
        ("shares", ["alice"], "request: shares must map approver names to ciphertext"),
        ("shares.alice", 5, "request: shares must map approver names to ciphertext"),
    ],
)
def test_each_request_rule_refuses(path: str, value: Any, message: str) -> None:
    with pytest.raises(InputError) as err:
        UnsealRequest.from_dict(_set(REQUEST, path, value))
    assert err.value.message == message


def test_request_boundaries_that_are_accepted() -> None:
    r = UnsealRequest.from_dict(_set(_set(REQUEST, "ttl_seconds", 1), "scope", "x" * 64))
    assert (r.ttl_seconds, r.scope) == (1, "x" * 64)
    r = UnsealRequest.from_dict(_set(REQUEST, "groups.0.threshold", 2))
    assert r.groups[0].threshold == 2
    assert UnsealRequest.from_dict(_set(REQUEST, "requester", "A.b_c-9")).requester == "A.b_c-9"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("format", "breakglass-request/1", "not a breakglass-approval/1 document"),
        ("extra", 1, "approval: unknown field 'extra'"),
        ("signature", DELETE, "approval: missing field 'signature'"),
        ("request_id", "", "approval: request_id must be a non-empty string"),
        ("request_digest", 1, "approval: request_digest must be a non-empty string"),
        ("approver", "al ice", "approval: approver is not a valid name"),
        ("approver", "alice\n", "approval: approver is not a valid name"),
        ("approved_at", "yesterday", "approval approved_at is not an rfc 3339 utc time"),
        ("not_after", None, "approval not_after must be a time string"),
        ("share", "", "approval: share must be a non-empty string"),
        ("signature", 0, "approval: signature must be a non-empty string"),
    ],
)
def test_each_approval_rule_refuses(path: str, value: Any, message: str) -> None:
    with pytest.raises(InputError) as err:
        Approval.from_dict(_set(APPROVAL, path, value))
    assert err.value.message == message


def test_non_objects_are_refused() -> None:
    with pytest.raises(InputError) as err:
        UnsealRequest.from_dict([])
    assert err.value.message == "request must be a json object"
    with pytest.raises(InputError) as err:
        Approval.from_dict("x")
    assert err.value.message == "approval must be a json object"


def test_times_are_utc_seconds() -> None:
    plus_one = dt.timezone(dt.timedelta(hours=1))
    assert format_time(dt.datetime(2026, 11, 29, 20, 0, 0, 999, tzinfo=plus_one)) == (
        "2026-11-29T19:00:00Z"
    )
    assert parse_time("2026-11-29T19:00:00Z", "t") == T0
    assert parse_time("2026-11-29T19:00:00Z", "t").tzinfo == dt.UTC


def test_a_time_not_in_the_written_form_is_still_read_as_utc() -> None:
    # strptime is lenient about digit counts; what it reads is the same instant, in UTC
    for text in ("2026-11-29T19:0:0Z", "2026-11-29T19:00:0Z"):
        moment = parse_time(text, "t")
        assert moment == T0
        assert moment.tzinfo == dt.UTC
    late = parse_time("2026-1-2T3:04:05Z", "t")
    assert late == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert late.tzinfo == dt.UTC
    for bad in ("2026-11-29 19:00:00Z", "2026-11-29T19:00:00", "2026-11-29T19:00:00+00:00"):
        with pytest.raises(InputError, match="t is not an rfc 3339 utc time"):
            parse_time(bad, "t")


def test_armor_strips_only_padding() -> None:
    from builder.approval.request import _b64

    assert _b64(b"\x00\x00\x17") == "AAAX"
    assert _b64(b"\x00\x05") == "AAU"


def test_times_are_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert format_time(T0) == "2026-11-29T19:00:00Z"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_reason_of_exactly_the_longest_length_is_accepted() -> None:
    longest = "r" * MAX_REASON
    assert UnsealRequest.from_dict(_set(REQUEST, "reason", longest)).reason == longest
    with pytest.raises(InputError, match="reason is longer than 2000 characters"):
        UnsealRequest.from_dict(_set(REQUEST, "reason", longest + "r"))


def test_armored_line_size_bound_is_exact() -> None:
    # the early bound on an armored line: 3/4 of its length, less the armor, may be the cap
    line = REQUEST_ARMOR + request_mod._b64(dumps(REQUEST))
    cap = bounded.cap("request")
    fits = (cap + len(REQUEST_ARMOR)) * 4 // 3 + 1  # the longest length whose 3/4 is the cap
    assert fits * 3 // 4 - len(REQUEST_ARMOR) == cap and fits * 3 % 4 != 0
    padded = line + " " * (fits - len(line))
    assert load_request(padded).id == REQUEST["id"]
    with pytest.raises(InputError, match=f"request is larger than its cap of {cap} bytes"):
        load_request(padded + " ")


def test_request_file_size_bound_is_exact(tmp_path: Path) -> None:
    # a file is read up to 4/3 of the cap plus 1 KiB; one byte more is refused unread
    limit = bounded.cap("request") * 4 // 3 + 1024
    path = tmp_path / "request"
    path.write_bytes(b" " * limit)
    with pytest.raises(InputError) as at_limit:
        load_request(str(path))
    assert at_limit.value.message.startswith("request is larger than its cap of ")
    path.write_bytes(b" " * (limit + 1))
    with pytest.raises(InputError) as over:
        load_request(str(path))
    assert over.value.message == f"{path}: request is larger than its cap"
