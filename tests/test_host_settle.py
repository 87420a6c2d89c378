"""``builder.host.expire``: what reseal and settling leave behind, event by event, in-process.

tests/test_host_expiry.py and tests/test_host_crash.py drive the commands; these
call ``reseal`` and ``settle`` on a real activated image and pin the state they
write, the plaintext they wipe and each audited event with its fields.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest

from builder.approval.request import format_time
from builder.core.canonical import dumps
from builder.core.errors import StateError
from builder.host import audit, clock, expire, grant, record, sessions, wipe
from builder.host.layout import CRASH_ENV, Layout
from builder.host.request import open_request
from builder.host.state import ACTIVE, DORMANT, PENDING, HostState, load
from builder.host.unseal import unseal
from tests import hostkit

T0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
SCOPE = "agent-backup"  # two plaintext files: a credential and an agent overlay


@pytest.fixture
def image(tmp_path: Path) -> hostkit.Image:
    return hostkit.clone(hostkit.shared_image(), tmp_path / "root")


def _pending(image: hostkit.Image, ttl: int = 600, scope: str = SCOPE) -> Any:
    return open_request(image.root, T0, scope=scope, ttl_seconds=ttl, reason="r", requester="dave")


def _activate(image: hostkit.Image, ttl: int = 600, scope: str = SCOPE) -> HostState:
    req = _pending(image, ttl, scope)
    approvals = [hostkit.lib_approve(req, image.approvers[n], T0) for n in ("alice", "bob")]
    assert unseal(image.root, T0, req.id, approvals).phase == ACTIVE
    new = load(image.root)
    assert new.active is not None
    assert len(new.active.files) == (2 if scope == SCOPE else 1)
    return new


def _events(image: hostkit.Image) -> list[dict[str, Any]]:
    return audit.read_events(Layout(image.root))


def _runtime_entries(image: hostkit.Image) -> list[str]:
    return [str(p.relative_to(image.root)) for p in wipe.runtime_files(Layout(image.root))]


def _tail(image: hostkit.Image, n: int) -> list[tuple[object, ...]]:
    """The last ``n`` events as (event, request_id, scope, details)."""
    return [(e["event"], e["request_id"], e["scope"], e["details"]) for e in _events(image)[-n:]]


# ---- reseal -----------------------------------------------------------------------------


def test_reseal_of_an_active_window(image: hostkit.Image) -> None:
    current = _activate(image)
    a = current.active
    assert a is not None
    layout = Layout(image.root)
    later = T0 + dt.timedelta(seconds=5)
    before = len(_events(image))
    new = expire.reseal(layout, current, later, "resealed", {"by": "test"})
    assert new == current.dormant() == load(image.root)
    assert new.phase == DORMANT and new.burned == {SCOPE: a.request_id}
    assert _runtime_entries(image) == []
    # exactly one event, with the window's request and scope, at the time given
    assert len(_events(image)) == before + 1
    last = _events(image)[-1]
    assert _tail(image, 1) == [("resealed", a.request_id, SCOPE, {"by": "test"})]
    assert last["time"] == format_time(later)
    audit.verify(layout)


def test_reseal_reports_links_and_seals_recordings(image: hostkit.Image, tmp_path: Path) -> None:
    current = _activate(image)
    a = current.active
    assert a is not None
    layout = Layout(image.root)
    outside = tmp_path / "outside"
    outside.write_bytes(b"not ours")
    (layout.runtime / "planted").symlink_to(outside)
    recordings = record.recordings_dir(layout)
    recordings.mkdir(parents=True, exist_ok=True)
    (recordings / "session.log").write_bytes(b"typed")
    expire.reseal(layout, current, T0, "resealed", {})
    assert outside.read_bytes() == b"not ours" and _runtime_entries(image) == []
    resealed, recovered, recorded = _tail(image, 3)
    assert resealed == ("resealed", a.request_id, SCOPE, {})
    assert recovered == ("recovered", a.request_id, SCOPE, {
        "found": "symbolic links in the runtime directory",
        "wiped": ["run/breakglass/planted" + wipe.LINK_NOTE],
    })  # fmt: skip
    assert recorded[:3] == (record.EVENT, a.request_id, SCOPE)
    details = recorded[3]
    assert isinstance(details, dict) and details["by"] == "reseal"
    assert [f["name"] for f in details["files"]] == ["session.log"]
    audit.verify(layout, recordings=True)


def test_reseal_without_links_or_recordings_audits_one_event(image: hostkit.Image) -> None:
    current = _activate(image)
    before = len(_events(image))
    expire.reseal(Layout(image.root), current, T0, "expired", {"by": "wall clock"})
    assert [e["event"] for e in _events(image)[before:]] == ["expired"]


def test_reseal_of_a_pending_request_names_it(image: hostkit.Image) -> None:
    req = _pending(image)
    current = load(image.root)
    assert current.phase == PENDING
    assert _runtime_entries(image) == [f"run/breakglass/.request-{req.id}.key"]
    new = expire.reseal(Layout(image.root), current, T0, "request-expired", {})
    assert new == current.dormant() == load(image.root) and new.burned == {}
    assert _runtime_entries(image) == []
    assert _tail(image, 1) == [("request-expired", req.id, SCOPE, {})]


def test_reseal_of_a_dormant_host_names_no_request(image: hostkit.Image) -> None:
    current = load(image.root)
    assert current.phase == DORMANT
    assert expire.reseal(Layout(image.root), current, T0, "resealed", {}) == current
    assert _tail(image, 1) == [("resealed", None, None, {})]


def test_reseal_closes_the_window_even_when_the_audit_fails(
    image: hostkit.Image, tmp_path: Path
) -> None:
    current = _activate(image)
    layout = Layout(image.root)
    (layout.runtime / "planted").symlink_to(tmp_path)
    recordings = record.recordings_dir(layout)
    recordings.mkdir(parents=True, exist_ok=True)
    (recordings / "session.log").write_bytes(b"typed")
    with layout.audit.open("ab") as f:
        f.write(b"damaged\n")
    with pytest.raises(StateError, match="last line is unreadable"):
        expire.reseal(layout, current, T0, "resealed", {})
    assert load(image.root) == current.dormant()
    assert _runtime_entries(image) == []
    assert layout.audit.read_bytes().endswith(b"damaged\n")  # nothing appended after it


def test_reseal_revokes_before_it_wipes(
    image: hostkit.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = _activate(image)
    a = current.active
    assert a is not None
    seen: list[tuple[str, str, str, int]] = []

    def point(name: str) -> None:  # what a kill at each crash point would leave behind
        seen.append((name, _events(image)[-1]["event"], load(image.root).phase,
                     len(_runtime_entries(image))))  # fmt: skip

    monkeypatch.setattr(expire, "crash_point", point)
    monkeypatch.setattr(wipe, "crash_point", point)
    expire.reseal(Layout(image.root), current, T0, "resealed", {})
    files = len(a.files) + 1  # and the grant
    assert seen == [
        ("reseal-after-audit", "resealed", ACTIVE, files),
        ("reseal-after-state", "resealed", DORMANT, files),
        ("reseal-mid-wipe", "resealed", DORMANT, files - 1),
        ("reseal-after-wipe", "resealed", DORMANT, 0),
    ]


def test_reseal_ends_the_windows_sessions(
    image: hostkit.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = _activate(image)
    a = current.active
    assert a is not None
    layout = Layout(image.root)
    calls: list[tuple[object, ...]] = []
    real = sessions.end_sessions

    def spy(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(sessions, "end_sessions", spy)
    later = T0 + dt.timedelta(seconds=7)
    expire.reseal(layout, current, later, "resealed", {})
    assert len(calls) == 1
    assert calls[0][0] is layout and calls[0][1:] == (later, a.request_id, SCOPE)
    # a pending request has no sessions to end
    _pending(image)
    expire.reseal(layout, load(image.root), later, "request-expired", {})
    assert len(calls) == 1


def test_reseal_goes_on_when_the_links_cannot_be_audited(
    image: hostkit.Image, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    current = _activate(image)
    a = current.active
    assert a is not None
    layout = Layout(image.root)
    (layout.runtime / "planted").symlink_to(tmp_path)
    recordings = record.recordings_dir(layout)
    recordings.mkdir(parents=True, exist_ok=True)
    (recordings / "session.log").write_bytes(b"typed")
    real = audit.append

    def refuse_recovered(layout: Layout, now: dt.datetime, event: str, **kw: Any) -> str:
        if event == "recovered":
            raise StateError("cannot write the audit log (No space left on device)")
        return real(layout, now, event, **kw)

    monkeypatch.setattr(audit, "append", refuse_recovered)
    assert expire.reseal(layout, current, T0, "resealed", {}) == current.dormant()
    assert load(image.root) == current.dormant() and _runtime_entries(image) == []
    # the recordings are still sealed into the log
    assert [e for e, *_ in _tail(image, 2)] == ["resealed", record.EVENT]


@pytest.mark.parametrize("error", [StateError("log full"), OSError(5, "I/O error")])
def test_reseal_goes_on_when_the_recordings_cannot_be_sealed(
    image: hostkit.Image, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    current = _activate(image)

    def fail(*args: Any) -> None:
        raise error

    monkeypatch.setattr(record, "seal_pending", fail)
    assert expire.reseal(Layout(image.root), current, T0, "resealed", {}) == current.dormant()
    assert load(image.root) == current.dormant() and _runtime_entries(image) == []


# ---- settle: windows and requests --------------------------------------------------------


def test_settle_leaves_an_open_window_alone(image: hostkit.Image) -> None:
    current = _activate(image)
    before = _events(image)
    assert expire.settle(Layout(image.root), T0 + dt.timedelta(seconds=1)) == current
    assert _events(image) == before


def test_settle_reseals_a_closed_window_with_the_reason(image: hostkit.Image) -> None:
    current = _activate(image, ttl=60)
    a = current.active
    assert a is not None
    new = expire.settle(Layout(image.root), T0 + dt.timedelta(seconds=60))
    assert new == current.dormant() == load(image.root)
    assert _tail(image, 1) == [("expired", a.request_id, SCOPE, {
        "expires_at": format_time(a.expires_at), "by": "wall clock"})]  # fmt: skip
    assert _runtime_entries(image) == []


def test_settle_reseals_a_forged_window(image: hostkit.Image) -> None:
    current = _activate(image)
    a = current.active
    assert a is not None
    Layout(image.root).grant.unlink()
    expire.settle(Layout(image.root), T0)
    assert load(image.root).phase == DORMANT
    assert _tail(image, 1) == [("tampered", a.request_id, SCOPE, {
        "found": "no activation grant in the runtime directory"})]  # fmt: skip


def test_settle_drops_a_request_only_after_not_after(image: hostkit.Image) -> None:
    req = _pending(image)
    layout = Layout(image.root)
    current = load(image.root)
    assert expire.settle(layout, req.not_after) == current
    assert _events(image)[-1]["event"] == "request-created"
    assert expire.settle(layout, req.not_after + dt.timedelta(seconds=1)) == current.dormant()
    assert _tail(image, 1) == [("request-expired", req.id, SCOPE, {})]
    assert _runtime_entries(image) == []


def test_settle_audits_a_frozen_clock_it_ignores(
    image: hostkit.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout(image.root)
    monkeypatch.setenv(clock.FROZEN_ENV, "2020-01-01T00:00:00Z")
    assert expire.settle(layout, T0).phase == DORMANT
    assert _tail(image, 1) == [("unsafe-clock-ignored", None, None, {
        "variable": clock.FROZEN_ENV, "why": "not a drill build"})]  # fmt: skip
    # a drill image honours it: nothing to audit
    manifest = json.loads(layout.manifest.read_bytes())
    manifest["image"]["drill"] = True
    layout.manifest.write_bytes(dumps(manifest))
    before = len(_events(image))
    expire.settle(layout, T0)
    assert len(_events(image)) == before


def test_settle_reads_the_boot_clock_of_the_image(
    image: hostkit.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a drill image the frozen clock stops the boot clock too: the window stays open."""
    layout = Layout(image.root)
    manifest = json.loads(layout.manifest.read_bytes())
    manifest["image"]["drill"] = True
    layout.manifest.write_bytes(dumps(manifest))
    monkeypatch.setenv(clock.FROZEN_ENV, format_time(T0))
    current = _activate(image)
    a = current.active
    assert a is not None and a.boot_seconds == int(T0.timestamp())
    before = _events(image)
    assert expire.settle(layout, T0 + dt.timedelta(seconds=1)) == current
    assert _events(image) == before


# ---- settle: recovery from a crash -------------------------------------------------------


def test_recover_active_with_plaintext_missing(image: hostkit.Image) -> None:
    current = _activate(image)
    a = current.active
    assert a is not None
    (image.root / a.files[0]).unlink()
    assert expire.settle(Layout(image.root), T0) == current.dormant()
    assert _tail(image, 1) == [("recovered", a.request_id, SCOPE, {
        "found": "active but plaintext missing"})]  # fmt: skip
    assert _runtime_entries(image) == []


@pytest.mark.parametrize("event", ["resealed", "expired"])
def test_recover_a_reseal_interrupted_after_its_audit(image: hostkit.Image, event: str) -> None:
    current = _activate(image)
    a = current.active
    assert a is not None
    layout = Layout(image.root)
    # another request's reseal event means nothing for this window
    audit.append(layout, T0, event, request_id="0" * 32, scope=SCOPE)
    assert expire.settle(layout, T0) == current
    audit.append(layout, T0, event, request_id=a.request_id, scope=SCOPE)
    assert expire.settle(layout, T0) == current.dormant()
    assert _tail(image, 1) == [("recovered", a.request_id, SCOPE, {
        "found": "reseal interrupted"})]  # fmt: skip


def test_recover_stray_files_while_active(image: hostkit.Image) -> None:
    current = _activate(image)
    a = current.active
    assert a is not None
    layout = Layout(image.root)
    stray = layout.runtime / "ssh-emergency" / "emergency-ssh-key"
    stray.parent.mkdir()
    stray.write_bytes(b"left by another window")
    assert expire.settle(layout, T0) == current  # the window stays open
    assert not stray.exists() and all((image.root / f).is_file() for f in a.files)
    assert layout.grant.is_file()
    assert _tail(image, 1) == [("recovered", a.request_id, SCOPE, {
        "found": "stray files while active",
        "wiped": ["run/breakglass/ssh-emergency/emergency-ssh-key"]})]  # fmt: skip
    before = len(_events(image))
    assert expire.settle(layout, T0) == current
    assert len(_events(image)) == before


def test_recover_an_activation_that_was_not_audited(image: hostkit.Image) -> None:
    req = _pending(image)
    approvals = [hostkit.lib_approve(req, image.approvers[n], T0) for n in ("alice", "bob")]
    r = hostkit.run("host", "unseal", "--root", str(image.root), req.id, *approvals,
                    env={CRASH_ENV: "unseal-after-state"})  # fmt: skip
    assert r.returncode == -9, r.stderr
    current = load(image.root)
    a = current.active
    assert a is not None
    assert _events(image)[-1]["event"] == "activating"
    now = a.activated_at  # the subprocess's clock
    assert expire.settle(Layout(image.root), now) == current
    assert _tail(image, 1) == [("activated", req.id, SCOPE, {
        "recovered": "activation finished but not audited",
        "activated_at": format_time(a.activated_at), "expires_at": format_time(a.expires_at),
        "approvers": ["alice", "bob"], "files": list(a.files),
    })]  # fmt: skip
    # now the window is backed by its audited activation
    assert expire.settle(Layout(image.root), now) == current
    assert _events(image)[-1]["event"] == "activated"


@pytest.mark.parametrize("how", ["no approvers", "no details"])
def test_recover_an_unaudited_activation_from_a_bare_intent(image: hostkit.Image, how: str) -> None:
    """An ``activating`` line that names no approvers is completed with an empty list."""
    current = _activate(image)
    a = current.active
    assert a is not None
    layout = Layout(image.root)
    if how == "no approvers":
        audit.append(layout, T0, "activating", request_id=a.request_id, scope=SCOPE)
    else:  # a line that audit.append did not write: only its seq is needed to chain the next
        seq = _events(image)[-1]["seq"] + 1
        line = {"seq": seq, "event": "activating", "request_id": a.request_id}
        with layout.audit.open("ab") as f:
            f.write(json.dumps(line).encode() + b"\n")
    assert expire._recover(layout, current, T0) == current
    last = json.loads(layout.audit.read_bytes().splitlines()[-1])  # read_events refuses that line
    assert (last["event"], last["request_id"], last["scope"]) == ("activated", a.request_id, SCOPE)
    assert last["details"] == {
        "recovered": "activation finished but not audited",
        "activated_at": format_time(a.activated_at), "expires_at": format_time(a.expires_at),
        "approvers": [], "files": list(a.files),
    }  # fmt: skip


def test_recover_plaintext_while_dormant(image: hostkit.Image) -> None:
    layout = Layout(image.root)
    (layout.runtime / "agents").mkdir()
    (layout.runtime / "agents" / "left").write_bytes(b"x")
    (layout.runtime / ".hidden").write_bytes(b"y")
    current = load(image.root)
    assert expire.settle(layout, T0) == current
    assert _tail(image, 1) == [("recovered", None, None, {
        "found": "plaintext while dormant",
        "wiped": ["run/breakglass/.hidden", "run/breakglass/agents/left"]})]  # fmt: skip
    assert _runtime_entries(image) == []
    assert load(image.root) == current


def test_recover_plaintext_while_pending_burns_the_scope(image: hostkit.Image) -> None:
    req = _pending(image)
    layout = Layout(image.root)
    identity = layout.ephemeral_identity(req.id)
    (layout.runtime / SCOPE).mkdir()
    (layout.runtime / SCOPE / "deploy-token").write_bytes(b"exposed")
    new = expire.settle(layout, T0)
    # the request stays pending, with its identity; its scope is burned, as after an activation
    assert new.phase == PENDING and new.pending == load(image.root).pending
    assert new.burned == {SCOPE: req.id} == load(image.root).burned
    assert identity.is_file()
    assert _tail(image, 1) == [("recovered", req.id, SCOPE, {
        "found": "plaintext while pending",
        "wiped": [f"run/breakglass/{SCOPE}/deploy-token"]})]  # fmt: skip
    assert _runtime_entries(image) == [str(identity.relative_to(image.root))]


@pytest.mark.parametrize("name", [".request-0.key.tmp", "link"])
def test_recover_hidden_files_or_links_while_pending_burn_nothing(
    image: hostkit.Image, name: str, tmp_path: Path
) -> None:
    _pending(image)
    layout = Layout(image.root)
    path = layout.runtime / name
    if name == "link":
        path.symlink_to(tmp_path)
    else:
        path.write_bytes(b"temp")
    new = expire.settle(layout, T0)
    assert new.phase == PENDING and new.burned == {} == load(image.root).burned
    assert _events(image)[-1]["event"] == "recovered"
    assert not os.path.lexists(path)


def test_recover_a_pending_request_without_its_identity(image: hostkit.Image) -> None:
    req = _pending(image)
    layout = Layout(image.root)
    layout.ephemeral_identity(req.id).unlink()
    current = load(image.root)
    assert expire.settle(layout, T0) == current.dormant() == load(image.root)
    assert _tail(image, 1) == [("recovered", req.id, SCOPE, {
        "found": "pending request without its identity"})]  # fmt: skip


def test_a_quiet_pending_request_is_left_alone(image: hostkit.Image) -> None:
    _pending(image)
    current = load(image.root)
    before = _events(image)
    assert expire.settle(Layout(image.root), T0) == current
    assert _events(image) == before


def test_last_event_reads_the_final_line(image: hostkit.Image) -> None:
    layout = Layout(image.root)
    assert expire._last_event(layout) is None  # no log yet
    layout.state_dir.mkdir(parents=True, exist_ok=True)
    layout.audit.touch()
    assert expire._last_event(layout) is None  # an empty one
    _pending(image)
    last = expire._last_event(layout)
    assert last is not None and last == _events(image)[-1] and last["event"] == "request-created"
    with layout.audit.open("ab") as f:
        f.write(b"[1, 2]\n")
    assert expire._last_event(layout) is None
    with layout.audit.open("ab") as f:
        f.write(b"{not json\n")
    assert expire._last_event(layout) is None
    assert grant.GRANT  # (the module is imported for the layout of the runtime directory)
