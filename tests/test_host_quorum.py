"""Quorum rules of ``host unseal``: 2 of 3, distinct approvers, no self-approval, bound to one request."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builder.errors import CheckFailed, StateError
from builder.host import audit
from builder.host.layout import Layout
from builder.host.request import open_request
from builder.host.state import load
from builder.host.unseal import unseal
from builder.request import APPROVAL_ARMOR, Approval, load_approval
from tests import hostkit

T0 = dt.datetime(2026, 11, 29, 19, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def image(tmp_path: Path) -> hostkit.Image:
    return hostkit.clone(hostkit.shared_image(), tmp_path / "root")


def _request(image: hostkit.Image, scope: str = "ssh-emergency", now: dt.datetime = T0):  # type: ignore[no-untyped-def]
    return open_request(
        image.root, now, scope=scope, ttl_seconds=600, reason="db down", requester="dave"
    )


def _events(image: hostkit.Image, kind: str) -> list[dict[str, object]]:
    return [e for e in audit.read_events(Layout(image.root)) if e["event"] == kind]


def test_one_approval_never_unseals_two_distinct_do(image: hostkit.Image) -> None:
    req = _request(image)
    alice = hostkit.lib_approve(req, image.approvers["alice"], T0)
    r = unseal(image.root, T0, req.id, [alice])
    assert r.phase == "PENDING" and r.approvals == ("alice",)
    assert hostkit.plaintext_files(image.root) == []
    bob = hostkit.lib_approve(req, image.approvers["bob"], T0)
    r = unseal(image.root, T0, req.id, [bob])
    assert r.phase == "ACTIVE"
    key = image.root / "run/breakglass/ssh-emergency/emergency-ssh-key"
    # the unsealed credential is a usable OpenSSH ed25519 private key
    private = serialization.load_ssh_private_key(key.read_bytes(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    assert key.stat().st_mode & 0o777 == 0o600
    assert (image.root / "run/breakglass").stat().st_mode & 0o777 == 0o700
    assert not Layout(image.root).ephemeral_identity(req.id).exists()
    assert load(image.root).burned == {"ssh-emergency": req.id}
    assert audit.verify(Layout(image.root)).events == 5


def test_same_approver_twice_counts_once(image: hostkit.Image) -> None:
    req = _request(image)
    a1 = hostkit.lib_approve(req, image.approvers["alice"], T0)
    a2 = hostkit.lib_approve(req, image.approvers["alice"], T0 + dt.timedelta(seconds=5))
    with pytest.raises(CheckFailed, match="already counted"):
        unseal(image.root, T0, req.id, [a1, a2])
    assert load(image.root).phase == "PENDING"
    assert hostkit.plaintext_files(image.root) == []
    refused = _events(image, "approval-refused")
    assert [e["details"] for e in refused] == [
        {"approver": "alice", "reason": "approver already counted"}
    ]


def test_requester_cannot_approve_own_request(image: hostkit.Image) -> None:
    req = _request(image)
    # the requester holds an approver key (alice) and forges an approval naming herself as requester
    req2 = open_request(
        image.root, T0, scope="ssh-emergency", ttl_seconds=600, reason="x", requester="alice"
    )
    own = Approval(req2.id, req2.digest, "alice", T0, req2.not_after, "x", "y")
    with pytest.raises(CheckFailed, match="requester cannot approve"):
        unseal(image.root, T0, req2.id, [own.armored()])
    assert _events(image, "approval-refused")[-1]["details"]["reason"] == (  # type: ignore[index]
        "the requester cannot approve their own request"
    )
    assert req.id != req2.id


def test_approval_for_another_request_is_refused(image: hostkit.Image) -> None:
    r1 = _request(image)
    a1 = hostkit.lib_approve(r1, image.approvers["alice"], T0)
    r2 = _request(image)  # supersedes r1
    with pytest.raises(CheckFailed, match="another request"):
        unseal(image.root, T0, r2.id, [a1])
    with pytest.raises(StateError, match="not pending"):
        unseal(image.root, T0, r1.id, [a1])
    reasons = [e["details"]["reason"] for e in _events(image, "approval-refused")]  # type: ignore[index]
    assert reasons == [
        "approval is for another request",
        "request is not pending (host is PENDING)",
    ]


def test_expired_request_and_approval_are_refused(image: hostkit.Image) -> None:
    req = _request(image)
    a = hostkit.lib_approve(req, image.approvers["alice"], T0)
    b = hostkit.lib_approve(req, image.approvers["bob"], T0)
    late = req.not_after + dt.timedelta(seconds=1)
    with pytest.raises(StateError, match="not pending"):
        unseal(image.root, late, req.id, [a, b])
    assert [e["event"] for e in audit.read_events(Layout(image.root))][-2:] == [
        "request-expired",
        "approval-refused",
    ]
    assert not Layout(image.root).ephemeral_identity(req.id).exists()
    assert hostkit.plaintext_files(image.root) == []


def test_approval_with_shortened_expiry_is_refused(image: hostkit.Image) -> None:
    req = _request(image)
    short = dataclasses.replace(req, not_after=T0 + dt.timedelta(seconds=10))
    a = hostkit.lib_approve(
        short, image.approvers["alice"], T0
    )  # signed, but for a different window
    with pytest.raises(CheckFailed, match="different request digest"):
        unseal(image.root, T0 + dt.timedelta(seconds=20), req.id, [a])


def _tampered(line: str, field: str, value: str) -> str:
    doc = load_approval(line).to_dict()
    doc[field] = value
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("signature", "signature does not verify"),
        ("share", "signature does not verify"),
        ("request_digest", "different request digest"),
    ],
)
def test_altered_approval_is_refused(
    image: hostkit.Image, tmp_path: Path, field: str, reason: str
) -> None:
    req = _request(image)
    good = load_approval(hostkit.lib_approve(req, image.approvers["alice"], T0)).to_dict()
    other = load_approval(hostkit.lib_approve(req, image.approvers["bob"], T0)).to_dict()
    bad = dict(good)
    if field == "request_digest":
        bad[field] = "sha256:" + "0" * 64
    else:
        bad[field] = other[field]  # a valid-looking value from another approval
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(CheckFailed, match=reason):
        unseal(image.root, T0, req.id, [str(path)])
    assert reason in str(_events(image, "approval-refused")[-1]["details"])
    assert load(image.root).pending.approvals == ()  # type: ignore[union-attr]


def test_malformed_approval_is_refused_and_audited(image: hostkit.Image) -> None:
    req = _request(image)
    with pytest.raises(CheckFailed, match="malformed approval"):
        unseal(image.root, T0, req.id, [APPROVAL_ARMOR + "!!!"])
    assert "malformed approval" in str(_events(image, "approval-refused")[-1]["details"])


def test_unsealing_scope_a_leaves_scope_b_unreadable(image: hostkit.Image) -> None:
    req = _request(image, "agent-backup")
    approvals = [hostkit.lib_approve(req, image.approvers[n], T0) for n in ("alice", "carol")]
    assert unseal(image.root, T0, req.id, approvals).phase == "ACTIVE"
    files = hostkit.plaintext_files(image.root)
    assert files == [
        "run/breakglass/agent-backup/deploy-token",
        "run/breakglass/agents/deploy-agent/agent.toml",
    ]
    overlay = image.root / "etc/breakglass/agents/deploy-agent/breakglass/agent.toml"
    assert (image.root / files[1]).read_bytes() == overlay.read_bytes()
    # the combined unseal key of agent-backup opens nothing of ssh-emergency
    from builder import agecrypt
    from builder.host.image import load_image, load_sealed_scope

    lay = Layout(image.root)
    host = load_image(lay)
    ssh = load_sealed_scope(lay, host, "ssh-emergency")
    token_scope = load_sealed_scope(lay, host, "agent-backup")
    assert ssh.unseal_recipient != token_scope.unseal_recipient
    assert not (image.root / "run/breakglass/ssh-emergency").exists()
    stray = agecrypt.generate_x25519()
    with pytest.raises(Exception, match="cannot decrypt"):
        agecrypt.decrypt(ssh.ciphertext("emergency-ssh-key"), [stray], what="x")


def test_request_refuses_ttl_above_cap_and_unknown_scope(image: hostkit.Image) -> None:
    from builder.errors import InputError

    with pytest.raises(InputError, match="exceeds the cap"):
        open_request(
            image.root, T0, scope="ssh-emergency", ttl_seconds=3601, reason="r", requester="d"
        )
    with pytest.raises(InputError, match="no scope 'nope'"):
        open_request(image.root, T0, scope="nope", ttl_seconds=60, reason="r", requester="d")
    assert not (image.root / "var/lib/breakglass/state.json").exists()
    assert not (image.root / "var/lib/breakglass/audit.jsonl").exists()


def test_request_refused_while_active(image: hostkit.Image) -> None:
    req = _request(image)
    approvals = [hostkit.lib_approve(req, image.approvers[n], T0) for n in ("alice", "bob")]
    unseal(image.root, T0, req.id, approvals)
    with pytest.raises(StateError, match="already active"):
        _request(image, "agent-backup")
