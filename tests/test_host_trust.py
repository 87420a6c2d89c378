"""Host trust: a hand-written state, a planted symlink, a umask or an empty root never opens access.

Each test plays one attack from issue 8 against a really built image root and
asserts that no key is printed, no plaintext lands outside the runtime
directory, and the next settling command reseals and audits what it found.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from builder.approval.request import UnsealRequest
from builder.core.canonical import dumps
from builder.core.errors import CheckFailed, StateError
from builder.core.record import replace
from builder.host import audit, clock, grant, wipe
from builder.host.authorized_keys import fast_main
from builder.host.layout import Layout
from builder.host.request import open_request
from builder.host.state import Active, active_scope, load, save
from builder.host.unseal import unseal
from tests import hostkit

USER = hostkit.EMERGENCY_USER


@pytest.fixture
def image(tmp_path: Path) -> hostkit.Image:
    return hostkit.clone(hostkit.shared_image(), tmp_path / "root")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _request(image: hostkit.Image, now: dt.datetime, ttl: int = 600) -> UnsealRequest:
    return open_request(
        image.root, now, scope="ssh-emergency", ttl_seconds=ttl, reason="r", requester="dave"
    )


def _activate(image: hostkit.Image, now: dt.datetime | None = None, ttl: int = 600) -> str:
    now = now or _now()
    req = _request(image, now, ttl)
    approvals = [hostkit.lib_approve(req, image.approvers[n], now) for n in ("alice", "bob")]
    assert unseal(image.root, now, req.id, approvals).phase == "ACTIVE"
    return req.id


def _keys(image: hostkit.Image, **env: str) -> subprocess.CompletedProcess[str]:
    return hostkit.run("host", "authorized-keys", "--root", str(image.root), USER, env=env)


def _events(image: hostkit.Image) -> list[dict[str, object]]:
    return audit.read_events(Layout(image.root))


def _state_doc(image: hostkit.Image) -> dict[str, object]:
    doc: dict[str, object] = json.loads((image.root / "var/lib/breakglass/state.json").read_bytes())
    return doc


def _write_state(image: hostkit.Image, doc: dict[str, object]) -> None:
    path = image.root / "var/lib/breakglass/state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dumps(doc))


def _assert_resealed_for(image: hostkit.Image, event: str, found: str) -> None:
    """The next settling command (tick) reseals, wipes, and audits ``event`` naming ``found``."""
    t = hostkit.run("host", "tick", "--root", str(image.root), "--json")
    assert t.returncode == 0, t.stderr
    assert json.loads(t.stdout) == {"state": "DORMANT"}
    assert hostkit.plaintext_files(image.root) == []
    assert not (image.root / grant.GRANT).exists()
    last = [e for e in _events(image) if e["event"] == event]
    assert last, [e["event"] for e in _events(image)]
    details = last[-1]["details"]
    assert isinstance(details, dict) and found in str(details["found"])
    v = hostkit.run("host", "audit", "verify", "--root", str(image.root))
    assert v.returncode == 0, v.stderr


# ---- 1. activation that cannot be written by hand ---------------------------------------


def test_hand_written_active_state_yields_no_key(image: hostkit.Image) -> None:
    now = _now()
    _write_state(image, {
        "format": "breakglass-host-state/1", "phase": "ACTIVE", "pending": None, "burned": {},
        "active": {"request_id": "f" * 32, "scope": "ssh-emergency", "files": [],
                   "activated_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "expires_at": "2099-01-01T00:00:00Z"},
    })  # fmt: skip
    assert fast_main(["--root", str(image.root), USER]) is None  # not quiet: hand to settling
    assert active_scope(image.root, now) is None
    k = _keys(image)
    assert k.returncode == 0 and k.stdout == "", k.stderr
    # authorized-keys settled it already; the audit names the forgery
    assert load(image.root).phase == "DORMANT"
    assert [e["event"] for e in _events(image)] == ["tampered"]
    assert "no activation grant" in str(_events(image)[0]["details"])


def test_hand_written_active_state_is_resealed_by_tick(image: hostkit.Image) -> None:
    _write_state(image, {
        "format": "breakglass-host-state/1", "phase": "ACTIVE", "pending": None, "burned": {},
        "active": {"request_id": "f" * 32, "scope": "ssh-emergency", "files": [],
                   "activated_at": "2026-01-01T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z"},
    })  # fmt: skip
    s = hostkit.run("host", "status", "--root", str(image.root), "--json")
    assert s.returncode == 0 and json.loads(s.stdout)["state"] == "DORMANT", s.stderr
    assert _events(image)[-1]["event"] == "tampered"


def test_stretched_expiry_on_a_real_window_yields_no_key(image: hostkit.Image) -> None:
    _activate(image)
    assert _keys(image).stdout.startswith("ssh-ed25519 ")
    doc = _state_doc(image)
    active = doc["active"]
    assert isinstance(active, dict)
    active["expires_at"] = "2099-01-01T00:00:00Z"
    _write_state(image, doc)
    assert fast_main(["--root", str(image.root), USER]) is None
    assert active_scope(image.root, _now()) is None
    _assert_resealed_for(image, "tampered", "differs from its activation grant")
    assert _keys(image).stdout == ""


def test_stretched_grant_without_an_audited_activation_yields_no_key(image: hostkit.Image) -> None:
    # an attacker who could also write the runtime directory, within the ttl cap
    _activate(image, ttl=600)
    current = load(image.root)
    assert current.active is not None
    longer = replace(current.active, expires_at=current.active.expires_at + dt.timedelta(hours=0.5))
    save(image.root, replace(current, active=longer))
    (image.root / grant.GRANT).write_bytes(dumps(longer.to_dict()))
    assert fast_main(["--root", str(image.root), USER]) is None
    assert active_scope(image.root, _now()) is None
    _assert_resealed_for(image, "tampered", "no audited activation matches")


def test_window_past_the_scope_ttl_cap_yields_no_key(image: hostkit.Image) -> None:
    # state, grant and a chained `activated` event all agree, but the window exceeds the cap
    _activate(image, ttl=600)
    current = load(image.root)
    assert current.active is not None
    a = replace(current.active, expires_at=dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
    save(image.root, replace(current, active=a))
    (image.root / grant.GRANT).write_bytes(dumps(a.to_dict()))
    record = a.to_dict()
    audit.append(Layout(image.root), a.activated_at, "activated", request_id=a.request_id,
                 scope=a.scope, details={"activated_at": record["activated_at"],
                                         "expires_at": record["expires_at"]})  # fmt: skip
    audit.verify(Layout(image.root))
    assert fast_main(["--root", str(image.root), USER]) is None
    assert active_scope(image.root, _now()) is None
    _assert_resealed_for(image, "tampered", "exceeds the ttl cap of scope ssh-emergency (3600s)")


def test_unprivileged_path_trusts_only_the_grant(image: hostkit.Image) -> None:
    from builder.host.authorized_keys import open_scope

    rid = _activate(image)
    boot = clock.boot()
    assert open_scope(image.root, _now(), boot) == "ssh-emergency"
    # a forged state file changes nothing for the grant reader; a missing grant closes it
    _write_state(image, {**_state_doc(image), "phase": "DORMANT", "active": None})
    assert open_scope(image.root, _now(), boot) == "ssh-emergency"
    (image.root / grant.GRANT).unlink()
    assert open_scope(image.root, _now(), boot) is None
    assert rid


def _plant(image: hostkit.Image, active: Active, *, audited: bool = True, **event: object) -> None:
    """Make ``active`` the state's record and its grant; with ``audited``, append its event too.

    ``event`` overrides fields of the ``activated`` event (``details`` merges).
    """
    current = load(image.root)
    save(image.root, replace(current, active=active))
    (image.root / grant.GRANT).write_bytes(dumps(active.to_dict()))
    if audited:
        record = active.to_dict()
        details = {"activated_at": record["activated_at"], "expires_at": record["expires_at"]}
        details.update(event.pop("details", {}))  # type: ignore[call-overload]
        fields: dict[str, object] = {"request_id": active.request_id, "scope": active.scope}
        fields.update(event)
        audit.append(Layout(image.root), active.activated_at, "activated", details=details,
                     **fields)  # type: ignore[arg-type]  # fmt: skip


def test_forged_names_the_check_that_failed(image: hostkit.Image) -> None:
    from builder.host import activation

    _activate(image, ttl=600)
    layout = Layout(image.root)
    current = load(image.root)
    a = current.active
    assert a is not None
    assert activation.forged(layout, a) is None
    assert activation.problem(layout, a, _now(), clock.boot()) is None
    # check 1: the grant
    shorter = replace(a, expires_at=a.expires_at - dt.timedelta(seconds=1))
    assert (
        activation.forged(layout, shorter) == "the active record differs from its activation grant"
    )
    assert activation.problem(layout, shorter, _now(), clock.boot()) == (
        "tampered", {"found": "the active record differs from its activation grant"})  # fmt: skip
    # check 2: the scope and its ttl cap (3600 s for ssh-emergency), a full hour is within it
    hour = replace(a, expires_at=a.activated_at + dt.timedelta(seconds=3600))
    _plant(image, hour)
    assert activation.forged(layout, hour) is None
    longer = replace(a, expires_at=a.activated_at + dt.timedelta(seconds=3601))
    _plant(image, longer)
    assert activation.forged(layout, longer) == (
        "a window of 3601s exceeds the ttl cap of scope ssh-emergency (3600s)"
    )
    elsewhere = replace(a, scope="no-such-scope")
    _plant(image, elsewhere)
    assert activation.forged(layout, elsewhere) == "the image has no scope 'no-such-scope'"
    # check 3: the last audited activation, field by field
    _plant(image, a)
    assert activation.forged(layout, a) is None
    for change in ({"request_id": "0" * 32}, {"scope": "agent-backup"},
                   {"details": {"activated_at": "2026-01-01T00:00:00Z"}},
                   {"details": {"expires_at": "2099-01-01T00:00:00Z"}}):  # fmt: skip
        _plant(image, a, **change)
        assert activation.forged(layout, a) == "no audited activation matches the active record", (
            change
        )
        _plant(image, a)
        assert activation.forged(layout, a) is None
    # another event after the activation changes nothing
    audit.append(layout, _now(), "status", request_id=a.request_id, scope=a.scope)
    assert activation.forged(layout, a) is None
    # a log that verifies but never saw an activation
    (image.root / "var/lib/breakglass/audit.jsonl").unlink()
    (image.root / "var/lib/breakglass/audit.head").unlink()
    audit.append(layout, _now(), "requested", request_id=a.request_id, scope=a.scope)
    assert activation.forged(layout, a) == "no audited activation matches the active record"
    # check 1 again: no grant at all
    (image.root / grant.GRANT).unlink()
    assert activation.forged(layout, a) == "no activation grant in the runtime directory"


def test_forged_when_the_image_or_the_log_cannot_be_read(image: hostkit.Image) -> None:
    from builder.host import activation

    _activate(image)
    layout = Layout(image.root)
    a = load(image.root).active
    assert a is not None
    log = image.root / "var/lib/breakglass/audit.jsonl"
    good = log.read_bytes()
    assert good.startswith(b'{"actor":') and b'"seq":1,' in good
    log.write_bytes(good.replace(b'"seq":1,', b'"seq":9,', 1))
    assert activation.forged(layout, a) == (
        "the audit log does not verify (audit log line 1: sequence number 9 where 1 was expected)"
    )
    log.write_bytes(good)
    assert activation.forged(layout, a) is None
    manifest = image.root / "etc/breakglass/manifest.json"
    manifest.write_bytes(b"{")
    why = activation.forged(layout, a)
    prefix = f"the image manifest is unreadable ({manifest}: manifest is not valid json ("
    assert why is not None and why.startswith(prefix) and why.endswith("))"), why


# ---- 2. a window the wall clock cannot stretch ------------------------------------------


def _faketime(offset: str) -> dict[str, str]:
    """libfaketime moving only the wall clock, as `date -s` would.

    By default libfaketime also moves CLOCK_BOOTTIME (to the faked wall time);
    FAKETIME_DONT_FAKE_MONOTONIC=1 leaves it alone, which is what setting the
    system clock does. ``test_faketime_moves_only_the_wall_clock`` checks that.
    """
    hostkit_lib = _libfaketime()
    return {
        "LD_PRELOAD": hostkit_lib,
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
    }


def _libfaketime() -> str:
    from tests.conftest import require_tool

    require_tool("faketime")
    for candidate in (
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ):
        if os.path.exists(candidate):
            return candidate
    pytest.fail("faketime is installed but libfaketime.so.1 was not found")


def test_faketime_moves_only_the_wall_clock() -> None:
    probe = "import time; print(time.time(), time.clock_gettime(time.CLOCK_BOOTTIME))"
    real = subprocess.run([hostkit.PYTHON, "-c", probe], capture_output=True, text=True, check=True)
    fake = subprocess.run([hostkit.PYTHON, "-c", probe], capture_output=True, text=True, check=True,
                          env={**os.environ, **_faketime("-1d")})  # fmt: skip
    (wall0, boot0), (wall1, boot1) = (map(float, p.stdout.split()) for p in (real, fake))
    assert abs((wall0 - wall1) - 86400) < 60  # the wall clock is a day back
    assert 0 <= boot1 - boot0 < 60  # the boot clock is the real one


@pytest.mark.parametrize(("offset", "event", "found"), [
    ("-1d", "clock-anomaly", "earlier than the activation"),
    ("+1d", "expired", "wall clock"),
])  # fmt: skip
def test_clock_moved_a_day_while_active(
    image: hostkit.Image, offset: str, event: str, found: str
) -> None:
    _activate(image, ttl=900)
    assert _keys(image, **_faketime("+0")).stdout.startswith("ssh-ed25519 ")  # the probe works
    k = _keys(image, **_faketime(offset))
    assert k.returncode == 0 and k.stdout == "", k.stderr
    assert hostkit.plaintext_files(image.root) == []
    last = _events(image)[-1]
    assert last["event"] == event and found in json.dumps(last["details"])
    s = hostkit.run("host", "status", "--root", str(image.root), "--json")
    assert json.loads(s.stdout)["state"] == "DORMANT"


def test_status_counts_no_more_than_the_ttl_when_the_clock_goes_back(image: hostkit.Image) -> None:
    _activate(image, ttl=900)
    s = hostkit.run("host", "status", "--root", str(image.root), "--json",
                    env=_faketime("-1d"))  # fmt: skip
    doc = json.loads(s.stdout)
    assert doc["state"] == "DORMANT" and "active" not in doc


@pytest.mark.e2e
def test_boot_clock_closes_the_window_when_the_wall_clock_lags(image: hostkit.Image) -> None:
    start = time.monotonic()
    _activate(image, ttl=4)
    time.sleep(max(0.0, 5.5 - (time.monotonic() - start)))
    # the wall clock is set 3 s back: by it the window has 1-2 s left; by the boot clock it is over
    k = _keys(image, **_faketime("-3s"))
    assert k.returncode == 0 and k.stdout == "", k.stderr
    last = _events(image)[-1]
    details = last["details"]
    assert last["event"] == "expired" and isinstance(details, dict)
    assert details["by"] == "boot clock"


def test_window_problem_arithmetic() -> None:
    t0 = dt.datetime(2026, 11, 29, 19, 0, tzinfo=dt.UTC)
    record = {"request_id": "r", "scope": "s", "files": [], "activated_at": "2026-11-29T19:00:00Z",
              "expires_at": "2026-11-29T19:15:00Z", "boot_id": "b", "boot_seconds": 100}  # fmt: skip
    ok = dt.timedelta(seconds=10)
    assert grant.window_problem(record, t0 + ok, ("b", 110)) is None
    assert grant.seconds_left(record, t0 + ok, ("b", 110)) == 890
    assert grant.seconds_left(record, t0 + ok, ("b", 900)) == 100  # boot clock ran further
    assert grant.window_problem(record, t0 + ok, ("b", 1000)) == (
        "expired", {"expires_at": "2026-11-29T19:15:00Z", "by": "boot clock"})  # fmt: skip
    assert grant.window_problem(record, t0 + dt.timedelta(minutes=15), ("b", 101))[0] == "expired"  # type: ignore[index]
    assert grant.window_problem(record, t0 - ok, ("b", 101))[0] == "clock-anomaly"  # type: ignore[index]
    assert grant.window_problem(record, t0 + ok, ("other", 101))[0] == "clock-anomaly"  # type: ignore[index]
    assert grant.window_problem(record, t0 + ok, ("b", 99))[0] == "clock-anomaly"  # type: ignore[index]
    assert grant.window_problem({**record, "boot_seconds": "1"}, t0, ("b", 1))[0] == "tampered"  # type: ignore[index]


# ---- 3. the frozen clock is for drills only ---------------------------------------------


def test_frozen_clock_is_ignored_on_a_production_image(image: hostkit.Image) -> None:
    # a 60 s window whose wall clock end has passed; the frozen clock names a moment inside it
    start = _now() - dt.timedelta(seconds=120)
    _activate(image, now=start, ttl=60)
    frozen = {clock.FROZEN_ENV: (start + dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    k = _keys(image, **frozen)
    assert k.returncode == 0 and k.stdout == ""
    assert "ignoring BREAKGLASS_UNSAFE_FROZEN_NOW: this image is not a drill build" in k.stderr
    events = [e["event"] for e in _events(image)]
    assert events[-2:] == ["unsafe-clock-ignored", "expired"]


def test_frozen_clock_is_honoured_only_by_a_drill_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "etc/breakglass/manifest.json"
    manifest.parent.mkdir(parents=True)
    os.environ[clock.FROZEN_ENV] = "2020-01-01T00:00:00Z"
    try:
        manifest.write_bytes(dumps({"image": {"name": "x", "drill": True}}))
        assert clock.now(tmp_path) == dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
        assert clock.boot(tmp_path)[1] == 1577836800  # the boot clock stops with it
        manifest.write_bytes(dumps({"image": {"name": "x"}}))
        assert clock.now(tmp_path).year >= 2026
        assert clock.boot(tmp_path)[1] < 1577836800
    finally:
        del os.environ[clock.FROZEN_ENV]


def _drill_root(tmp_path: Path, image: object) -> Path:
    manifest = tmp_path / clock.MANIFEST
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_bytes(dumps({"image": image}))
    return tmp_path


def test_frozen_clock_warns_on_stderr_when_read_for_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _drill_root(tmp_path, {"name": "x", "drill": True})
    monkeypatch.setenv(clock.FROZEN_ENV, "2020-01-01T00:00:00Z")
    assert clock.now(root) == dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == "breakglass: warning: unsafe frozen clock at 2020-01-01T00:00:00Z\n"
    # the boot clock stops too, silently: a command reads it after `now` has warned
    assert clock.boot(root)[1] == 1577836800
    assert capsys.readouterr() == ("", "")
    # a malformed value is ignored, with a warning, by `now` only
    monkeypatch.setenv(clock.FROZEN_ENV, "2020-01-01 00:00:00")
    moment = clock.now(root)
    assert moment.year >= 2026
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == f"breakglass: warning: ignoring malformed {clock.FROZEN_ENV}\n"
    assert clock.boot(root)[1] < 1577836800
    assert capsys.readouterr() == ("", "")


def test_now_is_utc_in_whole_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(clock.FROZEN_ENV, raising=False)
    moment = clock.now()
    assert moment.tzinfo is dt.UTC and moment.microsecond == 0
    assert abs((dt.datetime.now(dt.UTC) - moment).total_seconds()) < 60


@pytest.mark.parametrize("manifest", [
    None, b"", b"not json", b"[]", b'"image"', b'{"image": []}', b'{"image": "drill"}',
    b'{"name": "x"}', b'{"image": {"drill": "true"}}', b'{"image": {"drill": 1}}',
])  # fmt: skip
def test_only_a_manifest_saying_drill_true_is_a_drill_image(
    tmp_path: Path, manifest: bytes | None
) -> None:
    if manifest is not None:
        _drill_root(tmp_path, None).joinpath(clock.MANIFEST).write_bytes(manifest)
    assert clock.is_drill_image(tmp_path) is False
    assert clock.is_drill_image(_drill_root(tmp_path, {"drill": True})) is True


@pytest.mark.parametrize(("content", "expected"), [
    (b"8d2f0c3e-5a7b-4c1d-9e0f-123456789abc\n", "8d2f0c3e-5a7b-4c1d-9e0f-123456789abc"),
    (b"\n", "unknown"),  # empty
    ("b\u00e9\n".encode(), "unknown"),  # not ASCII
    (None, "unknown"),  # unreadable
])  # fmt: skip
def test_boot_id_reads_unknown_when_empty_or_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes | None, expected: str
) -> None:
    path = tmp_path / "boot_id"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setattr(clock, "BOOT_ID", str(path))
    monkeypatch.delenv(clock.FROZEN_ENV, raising=False)
    boot_id, seconds = clock.boot()
    assert boot_id == expected
    assert 0 < seconds <= time.clock_gettime(time.CLOCK_BOOTTIME)


def test_drill_builds_mark_the_manifest_and_others_do_not() -> None:
    assert "drill" not in hostkit.shared_image().manifest["image"]  # type: ignore[operator]


# ---- 4. no symlink is followed ----------------------------------------------------------


def _secret_bytes(image: hostkit.Image) -> list[bytes]:
    return [(image.root / f).read_bytes() for f in hostkit.plaintext_files(image.root)]


def _assert_no_plaintext_outside(top: Path, runtime: Path, secrets: list[bytes]) -> None:
    assert secrets
    for base, _dirs, files in os.walk(top):
        for name in files:
            path = Path(base) / name
            if path.is_symlink() or runtime in path.parents:
                continue
            data = path.read_bytes()
            assert not any(s in data for s in secrets), path


def test_symlink_at_the_runtime_dir_is_removed(image: hostkit.Image, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    runtime = image.root / "run/breakglass"
    runtime.rmdir()
    runtime.symlink_to(elsewhere)
    _activate(image)
    assert not runtime.is_symlink() and stat.S_IMODE(runtime.lstat().st_mode) == 0o700
    assert list(elsewhere.iterdir()) == []
    recovered = [e for e in _events(image) if e["event"] == "recovered"]
    assert "symbolic link" in json.dumps(recovered[0]["details"])
    secrets = _secret_bytes(image)
    _assert_no_plaintext_outside(tmp_path, runtime, secrets)
    assert hostkit.run("host", "reseal", "--root", str(image.root)).returncode == 0
    _assert_no_plaintext_outside(tmp_path, tmp_path / "nothing", secrets)


def test_symlink_at_the_scope_dir_is_removed_not_followed(
    image: hostkit.Image, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    now = _now()
    req = _request(image, now)
    (image.root / "run/breakglass/ssh-emergency").symlink_to(elsewhere)
    approvals = [hostkit.lib_approve(req, image.approvers[n], now) for n in ("alice", "bob")]
    assert unseal(image.root, now, req.id, approvals).phase == "ACTIVE"
    assert list(elsewhere.iterdir()) == []
    secrets = _secret_bytes(image)
    _assert_no_plaintext_outside(tmp_path, image.root / "run/breakglass", secrets)
    # a link planted while ACTIVE is removed unfollowed by reseal, and reported
    (elsewhere / "keep").write_text("not ours")
    (image.root / "run/breakglass/agents").symlink_to(elsewhere)
    r = hostkit.run("host", "reseal", "--root", str(image.root))
    assert r.returncode == 0, r.stderr
    assert (elsewhere / "keep").read_text() == "not ours"
    assert not (image.root / "run/breakglass/agents").is_symlink()
    found = [e for e in _events(image) if "symbolic link" in json.dumps(e["details"])]
    assert found and found[-1]["event"] == "recovered"
    _assert_no_plaintext_outside(tmp_path, tmp_path / "nothing", secrets)


def test_symlink_at_the_requests_dir_is_refused(image: hostkit.Image, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    requests = image.root / "var/lib/breakglass/requests"
    requests.parent.mkdir(parents=True, exist_ok=True)
    requests.symlink_to(elsewhere)
    with pytest.raises(
        StateError, match="unsafe directory var/lib/breakglass/requests: it is a symbolic link"
    ):
        _request(image, _now())
    r = hostkit.run("host", "request", "--root", str(image.root), "--scope", "ssh-emergency",
                    "--ttl", "10m", "--reason", "r", "--requester", "dave")  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.startswith("breakglass: error: unsafe directory var/lib/breakglass/requests")
    assert list(elsewhere.iterdir()) == []
    assert not any(
        p.name.startswith(".request-") for p in (image.root / "run/breakglass").iterdir()
    )


def test_symlink_at_an_approvals_dir_is_refused(image: hostkit.Image, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    now = _now()
    req = _request(image, now)
    Layout(image.root).approvals_dir(req.id).symlink_to(elsewhere)
    with pytest.raises(StateError, match=r"requests/[0-9a-f]+\.approvals: it is a symbolic link"):
        unseal(image.root, now, req.id, [hostkit.lib_approve(req, image.approvers["alice"], now)])
    assert list(elsewhere.iterdir()) == []


def test_unseal_refuses_an_unsafe_runtime_dir_and_says_why(image: hostkit.Image) -> None:
    now = _now()
    req = _request(image, now)
    runtime = image.root / "run/breakglass"
    os.chmod(runtime, 0o777)  # noqa: S103 - the attack
    approvals = [hostkit.lib_approve(req, image.approvers[n], now) for n in ("alice", "bob")]
    r = hostkit.run("host", "unseal", "--root", str(image.root), req.id, *approvals)
    assert r.returncode == 1
    assert r.stderr.startswith(
        "breakglass: error: unsafe directory run/breakglass: it is writable by group or others (mode 0777)"
    )
    assert hostkit.plaintext_files(image.root) == []
    assert _events(image)[-1]["event"] == "activation-refused"


# ---- the modes, whatever the umask ------------------------------------------------------


def _modes(top: Path) -> dict[str, str]:
    """``relative path -> "d0700"`` (d for a directory, f for anything else), ``.`` for ``top``."""
    out = {}
    for base, dirs, files in os.walk(top):
        for name in dirs + files:
            p = Path(base) / name
            out[str(p.relative_to(top))] = _mode(p)
    out["."] = _mode(top)
    return out


def _mode(p: Path) -> str:
    st = p.lstat()
    return ("d" if stat.S_ISDIR(st.st_mode) else "f") + f"{stat.S_IMODE(st.st_mode):04o}"


def _expected(kind: str, rel: str, is_dir: bool) -> str:
    """The documented modes (docs/host.md, runtime layout)."""
    akc = wipe.akc_gid() is not None
    if kind == "state":
        if is_dir:
            return "d0700"  # var/lib/breakglass, requests/, requests/ID.approvals/
        if rel in ("state.json", "lock"):
            return "f0600"
        if rel in ("audit.jsonl", "audit.head"):
            return "f0640"
        return "f0644"  # requests/ID.json, requests/ID.approvals/NAME.json: public records
    if rel == ".":
        return "d0710" if akc else "d0700"
    if rel == ".grant.json":
        return "f0640" if akc else "f0600"
    return "d0700" if is_dir else "f0600"


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_flow_under_umask_leaves_the_documented_modes(
    image: hostkit.Image, tmp_path: Path, umask: int
) -> None:
    root = str(image.root)
    preexec = lambda: os.umask(umask)  # noqa: E731

    def host(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([hostkit.PYTHON, "-m", "builder", "host", *args, "--root", root],
                              capture_output=True, text=True, preexec_fn=preexec, cwd=hostkit.REPO,
                              check=False)  # fmt: skip

    r = host("request", "--scope", "agent-backup", "--ttl", "10m", "--reason", "r",
             "--requester", "dave", "--out", str(tmp_path / "req.json"), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rid = json.loads(r.stdout)["request_id"]
    lines = []
    for n in ("alice", "bob"):
        a = hostkit.approve(tmp_path / "req.json", image.approvers[n], tmp_path / f"{n}.json")
        lines.append(a.stdout.strip())
    u = host("unseal", rid, lines[0])
    assert u.returncode == 0, u.stderr
    u = host("unseal", rid, lines[1])
    assert u.returncode == 0, u.stderr
    for phase in ("active", "resealed"):
        state = _modes(image.root / "var/lib/breakglass")
        assert state == {k: _expected("state", k, v[0] == "d") for k, v in state.items()}, phase
        runtime = _modes(image.root / "run/breakglass")
        assert runtime == {k: _expected("runtime", k, v[0] == "d") for k, v in runtime.items()}, (
            phase
        )
        if phase == "active":
            assert ".grant.json" in runtime and "agent-backup/deploy-token" in runtime
            assert f"requests/{rid}.approvals/alice.json" in state
            assert host("reseal").returncode == 0
    assert hostkit.plaintext_files(image.root) == []


# ---- not a host -------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("status",), ("tick",), ("reseal",), ("authorized-keys", "breakglass"),
    ("request", "--scope", "s", "--ttl", "1m", "--reason", "r", "--requester", "d"),
    ("unseal", "0" * 32, "BREAKGLASS-APPROVAL-1:AAAA"), ("audit", "verify"), ("audit", "show"),
])  # fmt: skip
def test_commands_on_an_empty_root_fail_and_write_nothing(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    r = hostkit.run("host", *args, "--root", str(empty))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert (
        lines[0]
        == f"breakglass: error: {empty} is not a breakglass host: it has no etc/breakglass/manifest.json"
    )
    assert lines[1].startswith("hint: pass --root DIR") and len(lines) == 2
    assert r.stdout == ""
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize("how", ["missing", "empty"])
def test_audit_verify_fails_when_the_log_is_gone(image: hostkit.Image, how: str) -> None:
    _request(image, _now())
    log = image.root / "var/lib/breakglass/audit.jsonl"
    if how == "missing":
        log.unlink()
    else:
        log.write_bytes(b"")
    (image.root / "var/lib/breakglass/audit.head").unlink()
    r = hostkit.run("host", "audit", "verify", "--root", str(image.root))
    assert r.returncode == 1
    assert r.stderr == (
        f"breakglass: error: the audit log is {how} but the host has a state file "
        "(the log was removed or truncated)\n"
    )
    with pytest.raises(CheckFailed):
        audit.verify(Layout(image.root))


def test_another_boot_closes_the_window(image: hostkit.Image) -> None:
    # a runtime directory that outlived a reboot (not a tmpfs): the recorded boot is not this one
    _activate(image)
    current = load(image.root)
    assert current.active is not None
    other = replace(current.active, boot_id="00000000-0000-0000-0000-000000000000")
    save(image.root, replace(current, active=other))
    (image.root / grant.GRANT).write_bytes(dumps(other.to_dict()))
    assert active_scope(image.root, _now()) is None
    assert _keys(image).stdout == ""
    assert _events(image)[-1]["event"] == "clock-anomaly"
    assert "booted since the activation" in json.dumps(_events(image)[-1]["details"])
    assert hostkit.plaintext_files(image.root) == []


@pytest.mark.parametrize("garbage", [b"[" * 100_000, b"\xff\xfe", b'{"scope": 1}', b""])
def test_a_garbage_grant_prints_no_key_and_no_traceback(
    image: hostkit.Image, garbage: bytes
) -> None:
    _activate(image)
    (image.root / grant.GRANT).write_bytes(garbage)
    k = _keys(image)
    assert k.returncode == 0 and k.stdout == "" and "Traceback" not in k.stderr, k.stderr
    assert _events(image)[-1]["event"] == "tampered"
