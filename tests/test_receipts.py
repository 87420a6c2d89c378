"""A ceremony without activation is seen: approvers keep receipts, drift checks them against audit logs.

Root on a host holding k approvals can combine the shares without ``host
unseal``: no ``activated`` event, no burned scope. ``drift --receipts
--audit`` must flag that request and mark its scope for rotation.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import pytest

from builder import receipt
from builder.errors import InputError
from builder.host.request import open_request
from builder.host.unseal import unseal
from builder.request import load_approval
from tests import hostkit


@pytest.fixture
def image(tmp_path: Path) -> hostkit.Image:
    return hostkit.clone(hostkit.shared_image(), tmp_path / "root")


def _src(image: hostkit.Image) -> Path:
    """The shared image's spec folder (spec, sealed bundle, enrolment)."""
    return hostkit.shared_image().root.parent / "src"


def _approve_past(image: hostkit.Image, receipts: Path, when: dt.datetime) -> tuple[str, list[str]]:
    """A request made and approved by alice and bob at ``when``, each keeping a receipt."""
    req = open_request(image.root, when, scope="ssh-emergency", ttl_seconds=600,
                       reason="db down", requester="dave")  # fmt: skip
    approvals = [hostkit.lib_approve(req, image.approvers[n], when) for n in ("alice", "bob")]
    for line in approvals:
        receipt.keep(receipt.Receipt.of(req, load_approval(line)), receipts)
    return req.id, approvals


def _drift(image: hostkit.Image, receipts: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    src = _src(image)
    return hostkit.run(
        "drift", str(src / "hostkit.yaml"), "--enrolment", str(src / "hostkit.enrolment.json"),
        "--receipts", str(receipts), "--audit", str(image.root / "var/lib/breakglass/audit.jsonl"),
        *extra,
    )  # fmt: skip


def test_drift_flags_an_approved_request_never_activated(
    image: hostkit.Image, tmp_path: Path
) -> None:
    receipts = tmp_path / "receipts"
    two_hours_ago = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    rid, _ = _approve_past(image, receipts, two_hours_ago)
    # k approvals reached the host; root combined them by hand: no `host unseal`, no activation
    r = _drift(image, receipts)
    assert r.returncode == 1, r.stderr
    assert (
        f"request {rid} scope ssh-emergency: approved by alice, bob, never activated in the "
        "audit logs given; rotate ssh-emergency"
    ) in r.stdout
    doc = json.loads(_drift(image, receipts, "--json").stdout)
    assert [u["request_id"] for u in doc["unactivated"]] == [rid]
    assert doc["unactivated"][0]["rotate"] is True
    marked = {c["scope"]: c["burned"] for c in doc["credentials"]}
    assert marked == {"ssh-emergency": True, "agent-backup": False}


def test_drift_accepts_an_approved_request_that_was_activated(
    image: hostkit.Image, tmp_path: Path
) -> None:
    receipts = tmp_path / "receipts"
    two_hours_ago = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
    rid, approvals = _approve_past(image, receipts, two_hours_ago)
    assert unseal(image.root, two_hours_ago, rid, approvals).phase == "ACTIVE"
    r = _drift(image, receipts, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["unactivated"] == []


def test_a_request_still_open_is_not_flagged(image: hostkit.Image, tmp_path: Path) -> None:
    receipts = tmp_path / "receipts"
    _approve_past(image, receipts, dt.datetime.now(dt.UTC).replace(microsecond=0))
    r = _drift(image, receipts)
    assert r.returncode == 0, r.stdout + r.stderr


def test_drift_needs_audit_logs_with_receipts(image: hostkit.Image, tmp_path: Path) -> None:
    src = _src(image)
    r = hostkit.run("drift", str(src / "hostkit.yaml"), "--enrolment",
                    str(src / "hostkit.enrolment.json"), "--receipts", str(tmp_path))  # fmt: skip
    assert r.returncode == 2 and "needs the hosts' audit logs" in r.stderr


def test_approve_keeps_a_receipt_without_secrets(image: hostkit.Image, tmp_path: Path) -> None:
    r = hostkit.run(
        "host", "request", "--root", str(image.root), "--scope", "ssh-emergency", "--ttl", "10m",
        "--reason", "db down", "--requester", "dave", "--out", str(tmp_path / "req.json"), "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rid = json.loads(r.stdout)["request_id"]
    keys = image.approvers["alice"]
    receipts = tmp_path / "mine"
    a = hostkit.run(
        "approve", str(tmp_path / "req.json"), "--identity", str(keys.identity), "--signing-key",
        str(keys.signing_key), "--approver", "alice", "--yes", "--receipts", str(receipts), "--json",
    )  # fmt: skip
    assert a.returncode == 0, a.stderr
    path = receipts / f"{rid}.alice.json"
    assert json.loads(a.stdout)["receipt"] == str(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(receipts).st_mode & 0o777 == 0o700
    kept = receipt.load_all(receipts)
    assert [(k.request_id, k.approver, k.scope, k.requester) for k in kept] == [
        (rid, "alice", "ssh-emergency", "dave")
    ]
    text = path.read_text()
    assert "AGE ENCRYPTED" not in text and "SSH SIGNATURE" not in text
    assert json.loads(a.stdout)["digest"] == kept[0].approval_digest


def test_a_bad_receipt_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"format": "breakglass-receipt/1", "format": 1}')
    with pytest.raises(InputError, match="duplicate key 'format'"):
        receipt.load_all(tmp_path)
