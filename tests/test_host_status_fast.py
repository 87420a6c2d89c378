"""``host status`` without settling: ``fast_describe`` answers only what ``describe`` would.

The fast answer is taken when nothing needs settling; every case that the
full path would change (a forged or closed window, a log that does not
verify, stray plaintext, an expired request) must make it give up (None), so
that ``describe`` settles. It never writes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from builder.core.canonical import dumps
from builder.host import grant
from builder.host.request import open_request
from builder.host.status import describe, fast_describe
from builder.host.unseal import unseal
from tests import hostkit

STATE = "var/lib/breakglass/state.json"
LOG = "var/lib/breakglass/audit.jsonl"


@pytest.fixture
def image(tmp_path: Path) -> hostkit.Image:
    return hostkit.clone(hostkit.shared_image(), tmp_path / "root")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _pending(image: hostkit.Image, ttl: int = 600) -> tuple[str, list[str]]:
    now = _now()
    req = open_request(
        image.root, now, scope="ssh-emergency", ttl_seconds=ttl, reason="r", requester="dave"
    )
    return req.id, [hostkit.lib_approve(req, image.approvers[n], now) for n in ("alice", "bob")]


def _active(image: hostkit.Image) -> str:
    rid, approvals = _pending(image)
    assert unseal(image.root, _now(), rid, approvals).phase == "ACTIVE"
    return rid


def _tree(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every path under ``root`` with its mode, mtime and content: what a write would change."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        out[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, data)
    return out


def _same_as_full(root: Path) -> dict[str, object]:
    """The fast answer, checked against the full path's (which runs after it: it may settle)."""
    before = _tree(root)
    fast = fast_describe(str(root))
    assert fast is not None
    assert _tree(root) == before  # read only
    full = describe(root, _now())
    if "active" in full:  # a second may pass between the two
        assert isinstance(fast["active"], dict) and isinstance(full["active"], dict)
        assert abs(fast["active"]["seconds_left"] - full["active"]["seconds_left"]) <= 1
        fast["active"]["seconds_left"] = full["active"]["seconds_left"]
    assert fast == full
    return fast


def test_quiet_hosts_answer_fast_and_alike(image: hostkit.Image) -> None:
    assert fast_describe(str(image.root)) is None  # a fresh host: the full path makes its lock
    describe(image.root, _now())
    assert _same_as_full(image.root)["state"] == "DORMANT"
    rid, approvals = _pending(image)
    assert _same_as_full(image.root)["state"] == "PENDING"
    unseal(image.root, _now(), rid, approvals[:1])
    doc = _same_as_full(image.root)
    assert doc["pending"]["approvals"] == ["alice"]  # type: ignore[index]
    unseal(image.root, _now(), rid, approvals[1:])
    doc = _same_as_full(image.root)
    assert doc["state"] == "ACTIVE" and doc["active"]["request_id"] == rid  # type: ignore[index]
    assert doc["burned"] == {"ssh-emergency": rid}


def _forge_state(root: Path, **active: object) -> None:
    doc = json.loads((root / STATE).read_bytes())
    doc["active"].update(active)
    (root / STATE).write_bytes(dumps(doc))


def _edit_log_line(root: Path, n: int) -> None:
    lines = (root / LOG).read_bytes().splitlines(keepends=True)
    lines[n - 1] = lines[n - 1].replace(b'"actor":"', b'"actor":"x')
    (root / LOG).write_bytes(b"".join(lines))


def _stray(root: Path) -> None:
    (root / "run/breakglass/ssh-emergency/extra").write_bytes(b"x")


def _link(root: Path) -> None:
    os.symlink("/etc", root / "run/breakglass/ssh-emergency/link")


def _grant_differs(root: Path) -> None:
    doc = json.loads((root / grant.GRANT).read_bytes())
    doc["boot_seconds"] += 1
    (root / grant.GRANT).write_bytes(dumps(doc))


def _no_grant(root: Path) -> None:
    (root / grant.GRANT).unlink()


def _bool_burned(root: Path) -> None:
    doc = json.loads((root / STATE).read_bytes())
    doc["burned"] = {"ssh-emergency": True}
    (root / STATE).write_bytes(dumps(doc))


def _missing_credential(root: Path) -> None:
    for path in (root / "run/breakglass/ssh-emergency").iterdir():
        path.unlink()


def _other_boot(root: Path) -> None:
    for target in (root / grant.GRANT, root / STATE):
        doc = json.loads(target.read_bytes())
        record = doc if target.name == ".grant.json" else doc["active"]
        record["boot_id"] = "another-boot"
        target.write_bytes(dumps(doc))


def _half_resealed(root: Path) -> None:
    from builder.host import audit
    from builder.host.layout import Layout

    doc = json.loads((root / STATE).read_bytes())
    audit.append(Layout(root), _now(), "resealed", request_id=doc["active"]["request_id"],
                 scope="ssh-emergency", details={"by": "reseal"})  # fmt: skip


def _head_behind(root: Path) -> None:
    (root / "var/lib/breakglass/audit.head").write_bytes(dumps({"seq": 1, "head": "sha256:00"}))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda root: _forge_state(root, expires_at="2099-01-01T00:00:00Z"),
        _grant_differs,
        _no_grant,
        lambda root: _edit_log_line(root, 1),
        _head_behind,
        _stray,
        _link,
        _missing_credential,
        _other_boot,
        _half_resealed,
        _bool_burned,
    ],
)
def test_anything_to_settle_takes_the_full_path(image: hostkit.Image, tamper: object) -> None:
    _active(image)
    assert fast_describe(str(image.root)) is not None
    assert callable(tamper)
    tamper(image.root)
    before = _tree(image.root)
    assert fast_describe(str(image.root)) is None
    assert _tree(image.root) == before


def test_a_frozen_clock_takes_the_full_path(
    image: hostkit.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    _active(image)
    monkeypatch.setenv("BREAKGLASS_UNSAFE_FROZEN_NOW", "2026-01-01T00:00:00Z")
    assert fast_describe(str(image.root)) is None  # settling audits the ignored switch


def test_pending_with_stray_plaintext_or_no_identity_takes_the_full_path(
    image: hostkit.Image,
) -> None:
    rid, _ = _pending(image)
    assert fast_describe(str(image.root)) is not None
    identity = image.root / f"run/breakglass/.request-{rid}.key"
    (image.root / "run/breakglass/leftover").write_bytes(b"secret")
    assert fast_describe(str(image.root)) is None
    (image.root / "run/breakglass/leftover").unlink()
    identity.rename(identity.with_name("moved"))
    assert fast_describe(str(image.root)) is None
    assert describe(image.root, _now())["state"] == "DORMANT"  # the full path recovers


def test_unsafe_state_directory_or_lock_takes_the_full_path(image: hostkit.Image) -> None:
    _active(image)
    state_dir = image.root / "var/lib/breakglass"
    state_dir.chmod(0o770)
    assert fast_describe(str(image.root)) is None
    state_dir.chmod(0o700)
    (state_dir / "lock").unlink()
    assert fast_describe(str(image.root)) is None
    assert describe(image.root, _now())["state"] == "ACTIVE"  # the full path makes the lock
    assert fast_describe(str(image.root)) is not None
    assert fast_describe(str(image.root / "nope")) is None
