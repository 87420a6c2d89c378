"""A ceremony without activation is seen: approvers keep receipts, drift checks them against audit logs.

Root on a host holding k approvals can combine the shares without ``host
unseal``: no ``activated`` event, no burned scope. ``drift --receipts
--audit`` must flag that request and mark its scope for rotation.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.approval import receipt
from builder.approval.request import load_approval
from builder.core.errors import InputError
from builder.host.request import open_request
from builder.host.unseal import unseal
from builder.release.seal import seal
from builder.release.spec import load_spec
from tests import hostkit

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
SEALED = NOW - dt.timedelta(hours=3)
APPROVED = NOW - dt.timedelta(hours=2)  # after the seal, long past the request's lifetime


@pytest.fixture
def image(tmp_path: Path) -> hostkit.Image:
    return hostkit.clone(hostkit.shared_image(), tmp_path / "root")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """The image's spec folder, sealed three hours ago (before the approvals in these tests)."""
    dest = tmp_path / "src"
    shutil.copytree(hostkit.shared_image().root.parent / "src", dest)
    seal(load_spec(dest / "hostkit.yaml"), SEALED, rotate=True)
    return dest


def _approve(image: hostkit.Image, receipts: Path, when: dt.datetime) -> tuple[str, list[str]]:
    """A request made and approved by alice and bob at ``when``, each keeping a receipt."""
    req = open_request(image.root, when, scope="ssh-emergency", ttl_seconds=600,
                       reason="db down", requester="dave")  # fmt: skip
    approvals = [hostkit.lib_approve(req, image.approvers[n], when) for n in ("alice", "bob")]
    for line in approvals:
        receipt.keep(receipt.Receipt.of(req, load_approval(line)), receipts)
    return req.id, approvals


def _drift(
    image: hostkit.Image, src: Path, receipts: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return hostkit.run(
        "drift", str(src / "hostkit.yaml"), "--enrolment", str(src / "hostkit.enrolment.json"),
        "--receipts", str(receipts), "--audit", str(image.root / "var/lib/breakglass/audit.jsonl"),
        *extra,
    )  # fmt: skip


def test_drift_flags_an_approved_request_never_activated(
    image: hostkit.Image, src: Path, tmp_path: Path
) -> None:
    receipts = tmp_path / "receipts"
    rid, _ = _approve(image, receipts, APPROVED)
    # k approvals reached the host; root combined them by hand: no `host unseal`, no activation
    r = _drift(image, src, receipts)
    assert r.returncode == 1, r.stderr
    assert (
        f"request {rid} scope ssh-emergency: approved by alice, bob, never activated in the "
        "audit logs given; rotate ssh-emergency"
    ) in r.stdout
    doc = json.loads(_drift(image, src, receipts, "--json").stdout)
    assert [(c["request_id"], c["activated"], c["rotate"]) for c in doc["ceremonies"]] == [
        (rid, False, True)
    ]
    marked = {c["scope"]: c["burned"] for c in doc["credentials"]}
    assert marked == {"ssh-emergency": True, "agent-backup": False}


def test_an_activated_request_is_used_and_a_reseal_clears_it(
    image: hostkit.Image, src: Path, tmp_path: Path
) -> None:
    receipts = tmp_path / "receipts"
    rid, approvals = _approve(image, receipts, APPROVED)
    assert unseal(image.root, APPROVED, rid, approvals).phase == "ACTIVE"
    r = _drift(image, src, receipts, "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert [(c["request_id"], c["activated"]) for c in doc["ceremonies"]] == [(rid, True)]
    assert {c["scope"]: c["burned"] for c in doc["credentials"]}["ssh-emergency"] is True
    # rotation: a seal after the ceremony leaves its receipts behind
    seal(load_spec(src / "hostkit.yaml"), NOW, rotate=True)
    r = _drift(image, src, receipts, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["ceremonies"] == []


def test_a_request_still_open_is_not_flagged(
    image: hostkit.Image, src: Path, tmp_path: Path
) -> None:
    receipts = tmp_path / "receipts"
    _approve(image, receipts, NOW)
    r = _drift(image, src, receipts)
    assert r.returncode == 0, r.stdout + r.stderr


def test_drift_needs_audit_logs_with_receipts(src: Path, tmp_path: Path) -> None:
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
