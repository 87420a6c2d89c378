"""Expiry holds without a timer; reseal wipes; status and authorized-keys reflect it."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from builder.host import audit
from builder.host.authorized_keys import authorized_keys
from builder.host.layout import Layout
from builder.host.request import open_request
from builder.host.state import active_scope, load
from builder.host.status import describe
from builder.host.unseal import unseal
from tests import hostkit

T0 = dt.datetime(2026, 11, 29, 19, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def image(tmp_path: Path) -> hostkit.Image:
    return hostkit.clone(hostkit.shared_image(), tmp_path / "root")


def _activate(
    image: hostkit.Image, ttl: int, scope: str = "ssh-emergency", now: dt.datetime = T0
) -> str:
    """Open ``scope`` for ``ttl`` seconds with two approvals; return the request id."""
    req = open_request(image.root, now, scope=scope, ttl_seconds=ttl, reason="r", requester="dave")
    approvals = [hostkit.lib_approve(req, image.approvers[n], now) for n in ("alice", "bob")]
    assert unseal(image.root, now, req.id, approvals).phase == "ACTIVE"
    return req.id


def test_frozen_clock_expiry_without_a_timer(image: hostkit.Image) -> None:
    request_id = _activate(image, 60)
    pub = json.loads((image.root / "etc/breakglass/manifest.json").read_bytes())["scopes"][0][
        "credentials"
    ][0]
    assert authorized_keys(image.root, "breakglass", T0 + dt.timedelta(seconds=59)) == [
        pub["public"]
    ]
    assert authorized_keys(image.root, "root", T0 + dt.timedelta(seconds=59)) == []
    assert active_scope(image.root, T0 + dt.timedelta(seconds=59)) == "ssh-emergency"
    assert active_scope(image.root, T0 + dt.timedelta(seconds=60)) is None
    assert hostkit.plaintext_files(image.root) != []
    # the first access after expires_at reseals: no timer involved
    assert authorized_keys(image.root, "breakglass", T0 + dt.timedelta(seconds=60)) == []
    assert hostkit.plaintext_files(image.root) == []
    assert load(image.root).phase == "DORMANT"
    assert load(image.root).burned == {"ssh-emergency": request_id}
    events = [e["event"] for e in audit.read_events(Layout(image.root))]
    assert events[-1] == "expired"
    audit.verify(Layout(image.root))


def test_status_applies_expiry_first(image: hostkit.Image) -> None:
    request_id = _activate(image, 30, "agent-backup")
    doc = describe(image.root, T0 + dt.timedelta(seconds=10))
    assert doc["state"] == "ACTIVE" and doc["active"]["seconds_left"] == 20
    doc = describe(image.root, T0 + dt.timedelta(seconds=31))
    assert doc["state"] == "DORMANT" and doc["burned"] == {"agent-backup": request_id}
    assert hostkit.plaintext_files(image.root) == []


def test_pending_request_expires(image: hostkit.Image) -> None:
    req = open_request(
        image.root, T0, scope="ssh-emergency", ttl_seconds=60, reason="r", requester="dave"
    )
    assert describe(image.root, req.not_after)["state"] == "PENDING"
    assert describe(image.root, req.not_after + dt.timedelta(seconds=1))["state"] == "DORMANT"
    assert not (image.root / "run/breakglass" / f".request-{req.id}.key").exists()


@pytest.mark.e2e
def test_real_two_second_ttl_end_to_end(image: hostkit.Image, tmp_path: Path) -> None:
    root = str(image.root)
    r = hostkit.run("host", "request", "--root", root, "--scope", "ssh-emergency", "--ttl", "2s",
                    "--reason", "drill", "--requester", "dave", "--out", str(tmp_path / "r.json"), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    rid = json.loads(r.stdout)["request_id"]
    lines = []
    for name in ("alice", "carol"):
        a = hostkit.approve(tmp_path / "r.json", image.approvers[name], tmp_path / f"{name}.json")
        assert a.returncode == 0, a.stderr
        lines.append(a.stdout.strip())
    u = hostkit.run("host", "unseal", "--root", root, rid, *lines, "--json")
    assert u.returncode == 0, u.stderr
    assert json.loads(u.stdout)["state"] == "ACTIVE"
    k = hostkit.run("host", "authorized-keys", "--root", root, "breakglass")
    assert k.stdout.startswith("ssh-ed25519 ")
    assert hostkit.plaintext_files(image.root) == ["run/breakglass/ssh-emergency/emergency-ssh-key"]
    time.sleep(2.2)
    k = hostkit.run("host", "authorized-keys", "--root", root, "breakglass")
    assert k.returncode == 0 and k.stdout == ""
    assert hostkit.plaintext_files(image.root) == []
    s = hostkit.run("host", "status", "--root", root, "--json")
    assert json.loads(s.stdout)["state"] == "DORMANT"
    v = hostkit.run("host", "audit", "verify", "--root", root)
    assert v.returncode == 0 and "head: sha256:" in v.stdout


def test_cli_reseal_tick_and_status(image: hostkit.Image) -> None:
    _activate(image, 600, now=dt.datetime.now(dt.UTC).replace(microsecond=0))
    root = str(image.root)
    s = hostkit.run("host", "status", "--root", root)
    assert s.returncode == 0 and s.stdout.startswith("ACTIVE: scope ssh-emergency")
    t = hostkit.run("host", "tick", "--root", root, "--json")
    assert json.loads(t.stdout) == {"state": "ACTIVE"}
    r = hostkit.run("host", "reseal", "--root", root)
    assert r.returncode == 0 and r.stdout == "DORMANT (was ACTIVE)\n"
    assert hostkit.plaintext_files(image.root) == []
    assert audit.read_events(Layout(image.root))[-1]["event"] == "resealed"
    _activate(
        image, 5, now=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    )  # long expired for the real clock
    t = hostkit.run("host", "tick", "--root", root, "--json")
    assert json.loads(t.stdout) == {"state": "DORMANT"}
    assert hostkit.plaintext_files(image.root) == []


def test_cli_errors_are_one_line(image: hostkit.Image) -> None:
    root = str(image.root)
    r = hostkit.run("host", "request", "--root", root, "--scope", "ssh-emergency", "--ttl", "2h",
                    "--reason", "x", "--requester", "dave")  # fmt: skip
    assert r.returncode == 2
    assert r.stderr == "breakglass: error: ttl 2h exceeds the cap of scope ssh-emergency (1h)\n"
    r = hostkit.run("host", "unseal", "--root", root, "0" * 32, "BREAKGLASS-APPROVAL-1:AAAA")
    assert r.returncode == 1
    assert r.stderr == (
        f"breakglass: error: request {'0' * 32} is not pending (host is DORMANT)\n"
        "hint: `breakglass host status` shows the pending request, if any\n"
    )
    r = hostkit.run("host", "status", "--root", str(image.root / "nope"))
    assert r.returncode == 2 and "is not a breakglass host" in r.stderr
    assert not (image.root / "nope").exists()
    (image.root / "var/lib/breakglass/state.json").write_text("{not json")
    r = hostkit.run("host", "status", "--root", root)
    state = image.root / "var/lib/breakglass/state.json"
    assert r.returncode == 2 and r.stderr == (
        f"breakglass: error: {state}: the host state file is malformed\n"
        f"hint: move it aside (mv {state} {state}.bad) and run `breakglass host tick`\n"
    )
    # authorized-keys never fails sshd's lookup loudly: bad state means no key
    k = hostkit.run("host", "authorized-keys", "--root", root, "breakglass")
    assert k.stdout == ""
