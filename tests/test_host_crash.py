"""Fault injection: SIGKILL at each step of unseal and reseal, then the next command recovers.

The kill comes from the test-only hook ``BREAKGLASS_TEST_CRASH_AT`` (see
``builder.host.layout.crash_point``).
"""

from __future__ import annotations

import datetime as dt
import json
import signal
from pathlib import Path

import pytest

from builder.host.layout import CRASH_ENV
from builder.host.request import open_request
from tests import hostkit

UNSEAL_POINTS = [
    "unseal-before-activate",
    "unseal-after-intent",
    "unseal-mid-decrypt",
    "unseal-after-credentials",
    "unseal-after-overlays",
    "unseal-after-identity",
    "unseal-after-state",
    "unseal-after-activated",
]
RESEAL_POINTS = ["reseal-after-audit", "reseal-after-state", "reseal-mid-wipe", "reseal-after-wipe"]


def _pending(tmp_path: Path) -> tuple[hostkit.Image, str, list[str]]:
    image = hostkit.clone(hostkit.shared_image(), tmp_path / "root")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    req = open_request(
        image.root, now, scope="agent-backup", ttl_seconds=600, reason="r", requester="dave"
    )
    return (
        image,
        req.id,
        [hostkit.lib_approve(req, image.approvers[n], now) for n in ("alice", "bob")],
    )


def _assert_consistent(image: hostkit.Image) -> str:
    root = str(image.root)
    s = hostkit.run("host", "status", "--root", root, "--json")
    assert s.returncode == 0, s.stderr
    doc = json.loads(s.stdout)
    files = hostkit.plaintext_files(image.root)
    state = json.loads((image.root / "var/lib/breakglass/state.json").read_bytes())
    assert state["phase"] == doc["state"]
    if doc["state"] == "ACTIVE":
        assert files == sorted(state["active"]["files"])
    else:
        assert files == []
    if doc["state"] == "PENDING":
        assert (
            image.root / "run/breakglass" / f".request-{state['pending']['request_id']}.key"
        ).exists()
    v = hostkit.run("host", "audit", "verify", "--root", root)
    assert v.returncode == 0, v.stderr
    return str(doc["state"])


@pytest.mark.parametrize("point", UNSEAL_POINTS)
def test_crash_during_unseal_recovers(tmp_path: Path, point: str) -> None:
    image, rid, approvals = _pending(tmp_path)
    r = hostkit.run(
        "host", "unseal", "--root", str(image.root), rid, *approvals, env={CRASH_ENV: point}
    )
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    state = _assert_consistent(image)
    expected = "ACTIVE" if point in ("unseal-after-state", "unseal-after-activated") else None
    if expected:
        assert state == expected
    else:
        assert state in ("PENDING", "DORMANT")
    if point in (
        "unseal-mid-decrypt",
        "unseal-after-credentials",
        "unseal-after-overlays",
        "unseal-after-identity",
    ):
        events = [
            json.loads(x)
            for x in (image.root / "var/lib/breakglass/audit.jsonl").read_text().splitlines()
        ]
        assert events[-1]["event"] == "recovered"
        assert events[-1]["details"]["wiped"]
    # after any crash the host can still be closed cleanly
    assert hostkit.run("host", "reseal", "--root", str(image.root)).returncode == 0
    assert _assert_consistent(image) == "DORMANT"


@pytest.mark.parametrize("point", RESEAL_POINTS)
def test_crash_during_reseal_recovers(tmp_path: Path, point: str) -> None:
    image, rid, approvals = _pending(tmp_path)
    u = hostkit.run("host", "unseal", "--root", str(image.root), rid, *approvals)
    assert u.returncode == 0, u.stderr
    assert len(hostkit.plaintext_files(image.root)) == 2
    r = hostkit.run("host", "reseal", "--root", str(image.root), env={CRASH_ENV: point})
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    assert _assert_consistent(image) == "DORMANT"
    k = hostkit.run("host", "authorized-keys", "--root", str(image.root), "breakglass")
    assert k.returncode == 0 and k.stdout == ""
