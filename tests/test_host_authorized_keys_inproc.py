"""``host authorized-keys`` in-process: what each step prints, and what it must never print.

sshd runs the command on every login; the tests here call its functions
directly (``fast_main`` with an argv, ``_quiet``, ``open_scope`` ...) on roots
made by ``tests/hostkit.py``, so that each decision is checked where it is made:
the key is printed only for the emergency user of a scope whose grant is open,
within the ttl cap, on a host whose state, grant and audit log agree.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from builder.core.canonical import dumps
from builder.core.errors import InputError
from builder.host import clock, grant
from builder.host.authorized_keys import (
    _last_activated,
    _quiet,
    authorized_keys,
    can_settle,
    emit,
    fast_main,
    keys_for,
    open_scope,
)
from builder.host.request import open_request
from builder.host.unseal import unseal
from tests import hostkit
from tests.conftest import require_root

USER = hostkit.EMERGENCY_USER
SCOPE = "ssh-emergency"
STATE = "var/lib/breakglass/state.json"
AUDIT = "var/lib/breakglass/audit.jsonl"
MANIFEST = "etc/breakglass/manifest.json"
CREDENTIAL = "run/breakglass/ssh-emergency/emergency-ssh-key"
_ACTIVE: dict[str, hostkit.Image] = {}
_MADE_AT = [0.0]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _stamp(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def image(tmp_path: Path) -> hostkit.Image:
    return hostkit.clone(hostkit.shared_image(), tmp_path / "root")


def _activated_root() -> hostkit.Image:
    """A host really activated (quorum, unseal) for 30 minutes of ssh-emergency, made once
    per process (and again after 10 minutes, so that every copy has time left)."""
    made = _ACTIVE.get("root")
    if made is None or not made.root.exists() or time.monotonic() - _MADE_AT[0] > 600:
        import atexit
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="breakglass-akc-"))
        atexit.register(shutil.rmtree, work, True)
        made = hostkit.clone(hostkit.shared_image(), work / "root")
        now = _now()
        req = open_request(
            made.root, now, scope=SCOPE, ttl_seconds=1800, reason="r", requester="dave"
        )
        approvals = [hostkit.lib_approve(req, made.approvers[n], now) for n in ("alice", "bob")]
        assert unseal(made.root, now, req.id, approvals).phase == "ACTIVE"
        _ACTIVE["root"], _MADE_AT[0] = made, time.monotonic()
    return made


@pytest.fixture
def active(tmp_path: Path) -> hostkit.Image:
    """A fresh copy of the activated host."""
    return hostkit.clone(_activated_root(), tmp_path / "root")


def _public(image: hostkit.Image) -> str:
    scopes = image.manifest["scopes"]
    assert isinstance(scopes, list)
    return str(next(s for s in scopes if s["name"] == SCOPE)["credentials"][0]["public"])


def _doc(root: Path, rel: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads((root / rel).read_bytes())
    return doc


def _record(root: Path) -> dict[str, object]:
    active = _doc(root, STATE)["active"]
    assert isinstance(active, dict)
    return active


def _write(root: Path, rel: str, doc: object) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dumps(doc))


def _append_event(root: Path, event: dict[str, object]) -> None:
    with (root / AUDIT).open("ab") as f:
        f.write(json.dumps(event, sort_keys=True, separators=(",", ":")).encode() + b"\n")


def _activated_event(root: Path, **change: object) -> dict[str, object]:
    """The log's own ``activated`` event for the active record, with ``change`` applied."""
    record = _record(root)
    event: dict[str, object] = {
        "event": "activated",
        "request_id": record["request_id"],
        "scope": record["scope"],
        "details": {"activated_at": record["activated_at"], "expires_at": record["expires_at"]},
    }
    event.update(change)
    return event


def _as_unprivileged(root: Path) -> None:
    """Give the state directory to another user: this process may then not settle the host,
    as the ``AuthorizedKeysCommandUser`` may not on a real one (the grant stays root's)."""
    require_root("the state directory is given to another user")
    os.chown(root / "var/lib/breakglass", 65534, 65534)
    assert not can_settle(root)


def _fast(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | None, str]:
    code = fast_main(argv)
    return code, capsys.readouterr().out


# ---- keys_for: only the ssh keys the manifest lists for the user in the scope -------------


def test_keys_for_lists_the_users_ssh_keys_of_the_scope_only(image: hostkit.Image) -> None:
    root = image.root
    assert keys_for(root, SCOPE, USER) == [_public(image)]
    assert keys_for(str(root), SCOPE, USER) == [_public(image)]
    assert keys_for(root, None, USER) == []
    assert keys_for(root, SCOPE, "root") == []
    assert keys_for(root, "agent-backup", USER) == []  # a token, and no emergency user
    assert keys_for(root, "no-such-scope", USER) == []


def test_keys_for_skips_every_malformed_entry(tmp_path: Path) -> None:
    def cred(kind: object, public: object) -> dict[str, object]:
        return {"kind": kind, "public": public}

    _write(tmp_path, MANIFEST, {"scopes": [
        "not a scope",
        {"name": "other", "emergency_user": USER, "credentials": [cred("ssh-ed25519", "OTHER")]},
        {"name": SCOPE, "emergency_user": "root", "credentials": [cred("ssh-ed25519", "ROOT")]},
        {"name": SCOPE, "emergency_user": USER, "credentials": [
            7,
            cred("token", "TOKEN"),
            cred("ssh-ed25519", "ssh-ed25519 AAAA\ncommand=x"),
            cred("ssh-ed25519", "K1"),
            cred("ssh-rsa", "K2"),
            {"public": "NO-KIND"},
            cred("xssh-ed25519", "NOT-SSH"),
        ]},
        {"name": SCOPE, "emergency_user": USER, "credentials": "not a list"},
        {"name": SCOPE, "emergency_user": USER, "credentials": None},
        {"name": SCOPE, "emergency_user": USER},
        {"name": SCOPE, "emergency_user": USER, "credentials": {"k": cred("ssh-ed25519", "D")}},
        {"name": SCOPE, "emergency_user": USER, "credentials": [cred("ssh-ed25519", "K3")]},
    ]})  # fmt: skip
    assert keys_for(tmp_path, SCOPE, USER) == ["K1", "K2", "K3"]


@pytest.mark.parametrize(
    "manifest",
    [
        None,
        b"{",
        b"[]",
        b'{"name": "x"}',
        b'{"scopes": {"name": "ssh-emergency"}}',
        b'{"scopes": null}',
        b'{"scopes": 5}',
        b'"x"',
    ],
)
def test_keys_for_an_unreadable_manifest_is_no_key(tmp_path: Path, manifest: bytes | None) -> None:
    if manifest is not None:
        (tmp_path / MANIFEST).parent.mkdir(parents=True)
        (tmp_path / MANIFEST).write_bytes(manifest)
    assert keys_for(tmp_path, SCOPE, USER) == []


# ---- can_settle: who may change the host -------------------------------------------------


def test_can_settle_is_owning_the_state_directory(
    image: hostkit.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.geteuid()
    assert can_settle(image.root) and can_settle(str(image.root))
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    assert not can_settle(image.root)  # the state directory is someone else's
    shutil.rmtree(image.root / "var/lib/breakglass")
    assert can_settle(image.root)  # no state yet: whoever may write the root
    assert not can_settle(image.root / "missing")  # nor even a root to write
    monkeypatch.setattr(os, "geteuid", lambda: real)
    assert can_settle(image.root / "missing") == (real == 0)  # root may always


# ---- open_scope: what the grant alone opens ----------------------------------------------


def _grant(root: Path, now: dt.datetime, span: int = 600, **change: object) -> None:
    boot_id, boot_at = clock.boot()
    record: dict[str, object] = {
        "request_id": "a" * 32, "scope": SCOPE, "files": [CREDENTIAL],
        "activated_at": _stamp(now - dt.timedelta(seconds=60)),
        "expires_at": _stamp(now - dt.timedelta(seconds=60) + dt.timedelta(seconds=span)),
        "boot_id": boot_id, "boot_seconds": boot_at - 60,
    }  # fmt: skip
    record.update(change)
    _write(root, grant.GRANT, record)


def test_open_scope_follows_the_grant_and_the_cap(image: hostkit.Image) -> None:
    root, now, boot = image.root, _now(), clock.boot()
    assert open_scope(root, now, boot) is None  # no grant
    _grant(root, now)
    assert open_scope(root, now, boot) == SCOPE
    assert open_scope(str(root), now, boot) == SCOPE
    assert open_scope(root, now + dt.timedelta(seconds=540), boot) is None  # expired
    assert open_scope(root, now, ("another-boot", boot[1])) is None
    _grant(root, now, span=3600)  # the cap of ssh-emergency, exactly
    assert open_scope(root, now, boot) == SCOPE
    _grant(root, now, span=3601)
    assert open_scope(root, now, boot) is None
    _grant(root, now, span=3601, scope="agent-backup")  # a cap of 4 hours
    assert open_scope(root, now, boot) == "agent-backup"
    _grant(root, now, scope="no-such-scope")
    assert open_scope(root, now, boot) is None


def test_open_scope_needs_a_readable_manifest(image: hostkit.Image) -> None:
    root, now, boot = image.root, _now(), clock.boot()
    _grant(root, now)
    (root / MANIFEST).write_bytes(b"{")
    assert open_scope(root, now, boot) is None
    (root / MANIFEST).unlink()
    assert open_scope(root, now, boot) is None


def test_open_scope_names_only_a_string_scope(image: hostkit.Image) -> None:
    root, now = image.root, _now()
    manifest = image.manifest
    scopes = manifest["scopes"]
    assert isinstance(scopes, list)
    _write(root, MANIFEST, {**manifest, "scopes": [*scopes, {"name": 7, "max_ttl_seconds": 3600}]})
    _grant(root, now, scope=7)
    assert open_scope(root, now, clock.boot()) is None


# ---- _last_activated: the log's last activation, read from its tail -----------------------


def _line(event: str = "activated", **fields: object) -> bytes:
    doc = {"event": event, "request_id": "r", **fields}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _log(root: Path, data: bytes) -> None:
    (root / AUDIT).parent.mkdir(parents=True, exist_ok=True)
    (root / AUDIT).write_bytes(data)


def test_last_activated_is_the_last_one(tmp_path: Path) -> None:
    assert _last_activated(tmp_path) is None  # no log
    _log(tmp_path, _line(n=1))
    assert _last_activated(tmp_path) == {"event": "activated", "request_id": "r", "n": 1}
    assert _last_activated(str(tmp_path)) == {"event": "activated", "request_id": "r", "n": 1}
    _log(tmp_path, _line("requested") + _line(n=1) + _line(n=2) + _line("status") + _line("x"))
    assert _last_activated(tmp_path) == {"event": "activated", "request_id": "r", "n": 2}
    _log(tmp_path, _line("requested") + _line("status"))
    assert _last_activated(tmp_path) is None


def test_last_activated_refuses_a_look_alike(tmp_path: Path) -> None:
    # the marker inside another event's details is not an activation, nor is a broken line
    _log(tmp_path, _line(n=1) + _line("status", details={"event": "activated"}))
    assert _last_activated(tmp_path) is None
    _log(tmp_path, _line(n=1) + b'{"event":"activated",\n')
    assert _last_activated(tmp_path) is None
    _log(tmp_path, _line(n=1) + b'[{"event":"activated"}]\n')
    assert _last_activated(tmp_path) is None


def test_last_activated_reads_only_the_last_64_kib(tmp_path: Path) -> None:
    event = _line(n=1)
    filler = _line("status", pad="x" * 900)
    tail = 64 * 1024
    # the activated line starts exactly 64 KiB before the end: read whole
    pad = tail - len(event)
    body = filler * (pad // len(filler))
    body += _line("status", pad="y" * (pad - len(body) - len(_line("status", pad=""))))
    assert len(event + body) == tail
    _log(tmp_path, _line("requested") + event + body)
    assert _last_activated(tmp_path) == {"event": "activated", "request_id": "r", "n": 1}
    # one byte further back: its first byte is cut, the line is refused
    body += b"\n"
    _log(tmp_path, _line("requested") + event + body)
    assert _last_activated(tmp_path) is None
    # a few bytes further: the tail starts after the marker, nothing is found
    body += b"\n" * 30
    _log(tmp_path, event + body)
    assert _last_activated(tmp_path) is None


# ---- _quiet: whether the owner of the host may answer without settling --------------------


def test_quiet_when_dormant(image: hostkit.Image) -> None:
    root, now, boot = image.root, _now(), clock.boot()
    assert not (root / STATE).exists()
    assert _quiet(root, now, boot) == (None,)
    _write(root, STATE, {"phase": "DORMANT", "pending": None, "active": None})
    assert _quiet(root, now, boot) == (None,)
    assert _quiet(str(root), now, boot) == (None,)


@pytest.mark.parametrize(
    "state", [b"{", b"[]", b'"DORMANT"', b'{"phase": "BROKEN"}', b'{"phase": null}', b"{}"]
)
def test_not_quiet_on_a_bad_state_file(image: hostkit.Image, state: bytes) -> None:
    (image.root / STATE).write_bytes(state)
    assert _quiet(image.root, _now(), clock.boot()) is None


def test_not_quiet_when_the_state_file_is_unreadable(image: hostkit.Image) -> None:
    (image.root / STATE).mkdir()
    assert _quiet(image.root, _now(), clock.boot()) is None


def test_quiet_while_pending_until_the_request_lapses(image: hostkit.Image) -> None:
    root, now, boot = image.root, _now(), clock.boot()
    open_request(root, now, scope=SCOPE, ttl_seconds=600, reason="r", requester="dave")
    pending = _doc(root, STATE)["pending"]
    assert isinstance(pending, dict)
    not_after = grant.parse_time(pending["not_after"])
    assert not_after is not None and list((root / "run/breakglass").iterdir())
    assert _quiet(root, now, boot) == (None,)
    assert _quiet(root, not_after, boot) == (None,)  # the last second
    assert _quiet(root, not_after + dt.timedelta(seconds=1), boot) is None
    (root / "run/breakglass/stray").write_text("x")
    assert _quiet(root, now, boot) is None


@pytest.mark.parametrize(
    "change", [{"not_after": "soon"}, {"not_after": None}, {"request_id": None}, None]
)
def test_not_quiet_on_a_malformed_pending_record(
    image: hostkit.Image, change: dict[str, object] | None
) -> None:
    root, now = image.root, _now()
    open_request(root, now, scope=SCOPE, ttl_seconds=600, reason="r", requester="dave")
    doc = _doc(root, STATE)
    pending = doc["pending"]
    assert isinstance(pending, dict)
    doc["pending"] = None if change is None else {**pending, **change}  # None: no record at all
    _write(root, STATE, doc)
    assert _quiet(root, now, clock.boot()) is None


def test_quiet_while_active_names_the_scope(active: hostkit.Image) -> None:
    assert _quiet(active.root, _now(), clock.boot()) == (SCOPE,)
    assert _quiet(str(active.root), _now(), clock.boot()) == (SCOPE,)


def test_not_quiet_when_the_window_closed(active: hostkit.Image) -> None:
    expires = grant.parse_time(_record(active.root)["expires_at"])
    assert expires is not None
    assert _quiet(active.root, expires, clock.boot()) is None


@pytest.mark.parametrize(
    "change",
    [
        {"request_id": "0" * 32},
        {"details": None},
        {"details": "activated"},
        {"details": {"activated_at": "2026-01-01T00:00:00Z"}},
        {"details": {"expires_at": "2099-01-01T00:00:00Z"}},
        {"details": {"activated_at": "2026-01-01T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z"}},
    ],
)
def test_not_quiet_when_the_last_activation_does_not_match(
    active: hostkit.Image, change: dict[str, object]
) -> None:
    root = active.root
    event = _activated_event(root)
    details = change.get("details", {})
    if isinstance(details, dict) and "details" in change:
        assert isinstance(event["details"], dict)
        change = {"details": {**event["details"], **details}}
    _append_event(root, {**event, **change})
    assert _quiet(root, _now(), clock.boot()) is None
    _append_event(root, event)  # the matching one last again
    assert _quiet(root, _now(), clock.boot()) == (SCOPE,)


def test_not_quiet_without_an_audited_activation(active: hostkit.Image) -> None:
    (active.root / AUDIT).unlink()
    assert _quiet(active.root, _now(), clock.boot()) is None


def test_not_quiet_when_state_and_grant_differ(active: hostkit.Image) -> None:
    root, now, boot = active.root, _now(), clock.boot()
    good = _record(root)
    _write(root, grant.GRANT, {**good, "request_id": "0" * 32})
    assert _quiet(root, now, boot) is None
    (root / grant.GRANT).unlink()
    assert _quiet(root, now, boot) is None
    # state and grant agree on a scope the grant may not open (no such scope)
    moved = {**good, "scope": "no-such-scope"}
    _write(root, grant.GRANT, moved)
    _write(root, STATE, {**_doc(root, STATE), "active": moved})
    _append_event(root, _activated_event(root))
    assert _quiet(root, now, boot) is None


@pytest.mark.parametrize("how", ["no active record", "no files", "files missing"])
def test_not_quiet_on_a_malformed_active_record(active: hostkit.Image, how: str) -> None:
    root = active.root
    doc = _doc(root, STATE)
    if how == "no active record":
        doc["active"] = None
    else:
        record = _record(root)
        del record["files"]
        doc["active"] = record
        if how == "no files":
            _write(root, grant.GRANT, record)
    _write(root, STATE, doc)
    assert _quiet(root, _now(), clock.boot()) is None


def test_not_quiet_on_a_runtime_directory_out_of_line(
    active: hostkit.Image, tmp_path: Path
) -> None:
    root, now, boot = active.root, _now(), clock.boot()
    runtime = root / "run/breakglass"
    (root / CREDENTIAL).rename(tmp_path / "key")
    assert _quiet(root, now, boot) is None  # a credential of the record is gone
    (tmp_path / "key").rename(root / CREDENTIAL)
    assert _quiet(root, now, boot) == (SCOPE,)
    (runtime / "agent-backup").mkdir()
    assert _quiet(root, now, boot) == (SCOPE,)  # an empty directory holds nothing
    (runtime / "agent-backup/deploy-token").write_text("x")
    assert _quiet(root, now, boot) is None  # plaintext no record names
    shutil.rmtree(runtime / "agent-backup")
    (runtime / "elsewhere").symlink_to(tmp_path)
    assert _quiet(root, now, boot) is None  # a link to a directory, counted as a file
    (runtime / "elsewhere").unlink()
    assert _quiet(root, now, boot) == (SCOPE,)
    moved = tmp_path / "runtime"
    runtime.rename(moved)
    runtime.symlink_to(moved)
    assert _quiet(root, now, boot) is None


# ---- emit: exactly the keys, one a line, or one JSON document -----------------------------


def test_emit_prints_exactly_the_keys(capsys: pytest.CaptureFixture[str]) -> None:
    emit(["ssh-ed25519 A a", "ssh-rsa B b"], USER, False)
    assert capsys.readouterr().out == "ssh-ed25519 A a\nssh-rsa B b\n"
    emit([], USER, False)
    assert capsys.readouterr().out == ""
    emit(["ssh-ed25519 A a"], USER, True)
    assert capsys.readouterr().out == '{"keys": ["ssh-ed25519 A a"], "user": "breakglass"}\n'
    emit([], "root", True)
    assert capsys.readouterr().out == '{"keys": [], "user": "root"}\n'


# ---- fast_main: the argv sshd passes, and what reaches stdout ------------------------------


def test_fast_main_active_prints_the_key_to_the_emergency_user_only(
    active: hostkit.Image, capsys: pytest.CaptureFixture[str]
) -> None:
    root, key = str(active.root), _public(active)
    assert _fast(["--root", root, USER], capsys) == (0, key + "\n")
    assert _fast([f"--root={root}", USER], capsys) == (0, key + "\n")
    assert _fast(["--root", root, "root"], capsys) == (0, "")
    assert _fast(["--root", root, "--json", USER], capsys) == (
        0, json.dumps({"keys": [key], "user": USER}, sort_keys=True) + "\n")  # fmt: skip
    assert _fast([USER, "--root", root, "--json"], capsys) == (
        0, json.dumps({"keys": [key], "user": USER}, sort_keys=True) + "\n")  # fmt: skip


def test_fast_main_dormant_prints_nothing(
    image: hostkit.Image, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(image.root)
    assert _fast(["--root", root, USER], capsys) == (0, "")
    assert _fast(["--root", root, "--json", USER], capsys) == (
        0,
        '{"keys": [], "user": "breakglass"}\n',
    )


def test_fast_main_takes_the_root_after_the_first_equals_sign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = hostkit.clone(hostkit.shared_image(), tmp_path / "a=b")
    assert _fast([f"--root={image.root}", "--json", USER], capsys) == (
        0, '{"keys": [], "user": "breakglass"}\n')  # fmt: skip


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--json"],
        ["-x"],
        ["--bogus", USER],
        [USER, "--bogus"],
        [USER, "root"],
        [USER, "--root"],
    ],
)
def test_fast_main_hands_any_other_command_line_to_the_cli(
    image: hostkit.Image, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert _fast(["--root", str(image.root), *argv], capsys) == (None, "")


def test_fast_main_hands_a_frozen_clock_or_a_non_host_to_the_cli(
    image: hostkit.Image, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    assert _fast(["--root", str(tmp_path), USER], capsys) == (None, "")
    monkeypatch.setenv(clock.FROZEN_ENV, "2026-01-01T00:00:00Z")
    assert _fast(["--root", str(image.root), USER], capsys) == (None, "")


def test_fast_main_hands_settling_to_the_cli_and_prints_nothing(
    active: hostkit.Image, capsys: pytest.CaptureFixture[str]
) -> None:
    root = active.root
    _append_event(root, _activated_event(root, request_id="0" * 32))
    before = sorted(str(p) for p in root.rglob("*"))
    assert _fast(["--root", str(root), USER], capsys) == (None, "")
    assert sorted(str(p) for p in root.rglob("*")) == before  # nothing settled here


def test_fast_main_unprivileged_answers_from_the_grant(
    active: hostkit.Image, capsys: pytest.CaptureFixture[str]
) -> None:
    root, key = active.root, _public(active)
    # a record the owner would settle first (no audited activation) does not matter here
    (root / AUDIT).unlink()
    _as_unprivileged(root)
    assert _fast(["--root", str(root), USER], capsys) == (0, key + "\n")
    assert _fast(["--root", str(root), "--json", USER], capsys) == (
        0, json.dumps({"keys": [key], "user": USER}, sort_keys=True) + "\n")  # fmt: skip
    assert _fast(["--root", str(root), "root"], capsys) == (0, "")
    assert _fast(["--root", str(root), "--json", "root"], capsys) == (
        0, '{"keys": [], "user": "root"}\n')  # fmt: skip


def test_fast_main_unprivileged_prints_nothing_once_the_grant_is_closed(
    active: hostkit.Image, capsys: pytest.CaptureFixture[str]
) -> None:
    root = active.root
    _as_unprivileged(root)
    record = grant.read(root)
    assert record is not None
    _write(root, grant.GRANT, {**record, "expires_at": _stamp(_now() - dt.timedelta(seconds=1))})
    assert _fast(["--root", str(root), USER], capsys) == (0, "")  # answers, never settles
    (root / grant.GRANT).unlink()
    assert _fast(["--root", str(root), USER], capsys) == (0, "")


# ---- authorized_keys: the full command, settling first -------------------------------------


def test_authorized_keys_settles_then_answers(active: hostkit.Image) -> None:
    root = active.root
    assert authorized_keys(root, USER, _now()) == [_public(active)]
    assert authorized_keys(root, "root", _now()) == []
    expires = grant.parse_time(_record(root)["expires_at"])
    assert expires is not None
    assert authorized_keys(root, USER, expires) == []
    assert _doc(root, STATE)["phase"] == "DORMANT"
    assert hostkit.plaintext_files(root) == [] and not (root / grant.GRANT).exists()


def test_authorized_keys_refuses_a_root_that_is_not_a_host(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not a breakglass host"):
        authorized_keys(tmp_path, USER, _now())
    assert list(tmp_path.iterdir()) == []


def test_authorized_keys_unprivileged_answers_from_the_grant(active: hostkit.Image) -> None:
    root = active.root
    (root / AUDIT).unlink()  # the owner would settle this; the AKC user may not
    _as_unprivileged(root)
    assert authorized_keys(root, USER, _now()) == [_public(active)]
    assert authorized_keys(root, "root", _now()) == []
    expires = grant.parse_time(_record(root)["expires_at"])
    assert expires is not None
    assert authorized_keys(root, USER, expires) == []
    assert (root / CREDENTIAL).exists()  # left for the timer to settle


def test_authorized_keys_unprivileged_on_a_drill_image_reads_its_frozen_clocks(
    active: hostkit.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a drill stops both clocks; the boot clock must be the image's frozen one, not the kernel's
    root, moment = active.root, _now() - dt.timedelta(days=3)
    manifest = active.manifest
    assert isinstance(manifest["image"], dict)
    _write(root, MANIFEST, {**manifest, "image": {**manifest["image"], "drill": True}})
    _as_unprivileged(root)
    start = moment - dt.timedelta(seconds=60)
    _write(root, grant.GRANT, {**_record(root), "activated_at": _stamp(start),
                               "expires_at": _stamp(start + dt.timedelta(seconds=600)),
                               "boot_seconds": int(start.timestamp())})  # fmt: skip
    monkeypatch.setenv(clock.FROZEN_ENV, _stamp(moment))
    assert authorized_keys(root, USER, moment) == [_public(active)]
    monkeypatch.delenv(clock.FROZEN_ENV)
    assert authorized_keys(root, USER, moment) == []  # the kernel's boot clock disagrees
