"""Quorum rules of ``host unseal``: 2 of 3, distinct approvers, no self-approval, bound to one request."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builder.approval.request import APPROVAL_ARMOR, Approval, load_approval
from builder.core.errors import CheckFailed, InputError, StateError
from builder.core.record import replace
from builder.host import audit
from builder.host.layout import Layout
from builder.host.request import open_request
from builder.host.state import load
from builder.host.unseal import progress, unseal
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
    last = _events(image, "approval-refused")[-1]
    assert (last["request_id"], last["scope"]) == (r1.id, None)


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
    short = replace(req, not_after=T0 + dt.timedelta(seconds=10))
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
    from builder.core import agecrypt
    from builder.host.image import load_image, load_sealed_scope

    lay = Layout(image.root)
    host = load_image(lay)
    ssh = load_sealed_scope(lay, host, "ssh-emergency")
    token_scope = load_sealed_scope(lay, host, "agent-backup")
    assert ssh.unseal_recipient != token_scope.unseal_recipient
    assert not (image.root / "run/breakglass/ssh-emergency").exists()
    stray = agecrypt.generate_x25519()
    with pytest.raises(InputError, match="cannot decrypt"):
        agecrypt.decrypt(ssh.ciphertext("emergency-ssh-key"), [stray], what="x")


def test_request_refuses_ttl_above_cap_and_unknown_scope(image: hostkit.Image) -> None:
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


# Two groups, one approval needed from each (group_threshold 2): fewest is 2, but two
# approvals from one group are not enough. dave, the requester below, is also an
# approver with a share; erin is an approver of the image who is in no group.
TWO_GROUPS = """\
  groups:
    - name: sre
      threshold: 1
      members: [alice, bob]
    - name: ops
      threshold: 1
      members: [carol, dave]
  group_threshold: 2
"""
GROUP_APPROVERS = ("alice", "bob", "carol", "dave", "erin")


@pytest.fixture
def groups_image(tmp_path: Path) -> hostkit.Image:
    built = hostkit.shared_image("two-groups", approvers=GROUP_APPROVERS, quorum=TWO_GROUPS)
    return hostkit.clone(built, tmp_path / "root")


def test_two_group_policy_is_what_the_request_carries(groups_image: hostkit.Image) -> None:
    req = _request(groups_image)
    assert req.group_threshold == 2
    assert [(g.name, g.threshold, g.members) for g in req.groups] == [
        ("sre", 1, ("alice", "bob")),
        ("ops", 1, ("carol", "dave")),
    ]
    assert sorted(req.shares) == ["alice", "bob", "carol", "dave"]
    assert load(groups_image.root).pending.needed == 2  # type: ignore[union-attr]


def test_two_approvals_from_one_group_stay_pending(groups_image: hostkit.Image) -> None:
    req = _request(groups_image)
    same = [hostkit.lib_approve(req, groups_image.approvers[n], T0) for n in ("alice", "bob")]
    r = unseal(groups_image.root, T0, req.id, same)
    assert (r.phase, r.approvals, r.refused) == ("PENDING", ("alice", "bob"), ())
    assert (r.request_id, r.scope, r.needed, r.expires_at) == (req.id, "ssh-emergency", 2, None)
    accepted = _events(groups_image, "approval-accepted")
    assert [e["details"] for e in accepted] == [
        {
            "approver": "alice",
            "approval_digest": load_approval(same[0]).digest,
            "count": 1,
            "needed": 2,
        },
        {
            "approver": "bob",
            "approval_digest": load_approval(same[1]).digest,
            "count": 2,
            "needed": 2,
        },
    ]
    assert {(e["request_id"], e["scope"]) for e in accepted} == {(req.id, "ssh-emergency")}
    stored = Layout(groups_image.root).approvals_dir(req.id)
    assert sorted(p.name for p in stored.iterdir()) == ["alice.json", "bob.json"]
    assert (stored / "alice.json").read_bytes() == load_approval(same[0]).canonical()
    assert load(groups_image.root).phase == "PENDING"
    assert hostkit.plaintext_files(groups_image.root) == []
    assert _events(groups_image, "activating") == []
    # the other group's approval completes the quorum, with the surplus share set aside
    carol = hostkit.lib_approve(req, groups_image.approvers["carol"], T0)
    r = unseal(groups_image.root, T0, req.id, [carol])
    assert r.phase == "ACTIVE" and r.approvals == ("alice", "bob", "carol")
    assert (r.scope, r.needed, r.refused) == ("ssh-emergency", 2, ())
    assert r.expires_at == T0 + dt.timedelta(seconds=600)
    activated = _events(groups_image, "activated")[-1]
    assert activated["details"] == {
        "activated_at": "2026-11-29T19:00:00Z",
        "expires_at": "2026-11-29T19:10:00Z",
        "approvers": ["alice", "bob", "carol"],
        "files": ["run/breakglass/ssh-emergency/emergency-ssh-key"],
    }
    assert _events(groups_image, "activating")[-1]["details"] == {
        "approvers": ["alice", "bob", "carol"]
    }
    assert hostkit.plaintext_files(groups_image.root) == [
        "run/breakglass/ssh-emergency/emergency-ssh-key"
    ]


def test_one_approval_from_each_group_activates(groups_image: hostkit.Image) -> None:
    req = _request(groups_image, "agent-backup")
    first = hostkit.lib_approve(req, groups_image.approvers["bob"], T0)
    assert unseal(groups_image.root, T0, req.id, [first]).phase == "PENDING"
    second = hostkit.lib_approve(req, groups_image.approvers["carol"], T0)
    r = unseal(groups_image.root, T0, req.id, [second])
    assert r.phase == "ACTIVE" and r.approvals == ("bob", "carol")
    assert (r.request_id, r.scope, r.needed) == (req.id, "agent-backup", 2)
    token = groups_image.root / "run/breakglass/agent-backup/deploy-token"
    assert token.stat().st_mode & 0o777 == 0o600 and token.read_bytes()
    state = load(groups_image.root)
    assert state.burned == {"agent-backup": req.id}
    assert state.active is not None
    assert (state.active.request_id, state.active.scope) == (req.id, "agent-backup")
    assert (state.active.activated_at, state.active.expires_at) == (
        T0,
        T0 + dt.timedelta(seconds=600),
    )
    assert state.active.files == (
        "run/breakglass/agent-backup/deploy-token",
        "run/breakglass/agents/deploy-agent/agent.toml",
    )
    assert [e["details"]["approvers"] for e in _events(groups_image, "activated")] == [  # type: ignore[index]
        ["bob", "carol"]
    ]


# Every refusal of unseal._check, each reached with an approval that is valid in every
# other respect: really signed by a real key, carrying a share that decrypts.


def _refused(
    image: hostkit.Image, req_id: str, line: str, reason: str, now: dt.datetime = T0
) -> None:
    with pytest.raises(CheckFailed) as err:
        unseal(image.root, now, req_id, [line])
    assert err.value.message == f"approval refused: {reason}"
    event = _events(image, "approval-refused")[-1]
    who = load_approval(line).approver
    assert (event["request_id"], event["scope"]) == (req_id, "ssh-emergency")
    assert event["details"] == {"approver": who, "reason": reason}
    state = load(image.root)
    assert state.phase == "PENDING" and state.pending.approvals == ()  # type: ignore[union-attr]
    assert hostkit.plaintext_files(image.root) == []


def test_validly_signed_self_approval_is_refused(groups_image: hostkit.Image) -> None:
    req = _request(groups_image)  # requested by dave, who holds a share in ops
    own = hostkit.signed_approval(req, groups_image.approvers["dave"], T0)
    _refused(groups_image, req.id, own, "the requester cannot approve their own request")
    # dave's approval is otherwise sound: with another requester it counts
    other = open_request(groups_image.root, T0, scope="ssh-emergency", ttl_seconds=600,
                         reason="db down", requester="erin")  # fmt: skip
    ok = hostkit.signed_approval(other, groups_image.approvers["dave"], T0)
    assert unseal(groups_image.root, T0, other.id, [ok]).approvals == ("dave",)


def test_approver_outside_the_policy_is_refused(groups_image: hostkit.Image) -> None:
    req = _request(groups_image)
    # mallory's own key signs; she can only make up a share, encrypted to the request
    from builder.core import agecrypt

    made_up = agecrypt.encrypt(b"not a share", [req.ephemeral_recipient])
    line = hostkit.signed_approval(req, groups_image.approvers["mallory"], T0, share=made_up)
    _refused(groups_image, req.id, line, "approver is not in the image's policy")


def test_approver_without_a_share_in_the_request_is_refused(groups_image: hostkit.Image) -> None:
    req = _request(groups_image)
    assert "erin" in {a["name"] for a in groups_image.manifest["policy"]["approvers"]}  # type: ignore[index]
    assert "erin" not in req.shares
    from builder.core import agecrypt

    # a share of alice's, copied: it decrypts, but erin holds no share of this request
    alice = load_approval(hostkit.lib_approve(req, groups_image.approvers["alice"], T0))
    line = hostkit.signed_approval(req, groups_image.approvers["erin"], T0, share=alice.share)
    _refused(groups_image, req.id, line, "approver holds no share of this request")
    made_up = agecrypt.encrypt(b"not a share", [req.ephemeral_recipient])
    line = hostkit.signed_approval(req, groups_image.approvers["erin"], T0, share=made_up)
    _refused(groups_image, req.id, line, "approver holds no share of this request")


def test_approval_expiry_not_matching_the_request_is_refused(groups_image: hostkit.Image) -> None:
    req = _request(groups_image)
    later = req.not_after + dt.timedelta(hours=1)
    line = hostkit.signed_approval(req, groups_image.approvers["alice"], T0, not_after=later)
    _refused(groups_image, req.id, line, "approval expiry does not match the request")


def test_approval_past_its_own_expiry_is_refused(groups_image: hostkit.Image) -> None:
    """The host drops a request at its ``not_after``, by the state file; the state file is
    not trusted (docs/host.md), so an approval is also held to its own signed expiry."""
    req = _request(groups_image)
    line = hostkit.lib_approve(req, groups_image.approvers["alice"], T0)
    state_file = groups_image.root / "var/lib/breakglass/state.json"
    doc = json.loads(state_file.read_bytes())
    doc["pending"]["not_after"] = "2099-01-01T00:00:00Z"
    state_file.write_text(json.dumps(doc))
    late = req.not_after + dt.timedelta(seconds=1)
    _refused(groups_image, req.id, line, "approval has expired", now=late)
    # the same approval one second earlier is accepted
    assert unseal(groups_image.root, req.not_after, req.id, [line]).approvals == ("alice",)


def test_approval_for_the_digest_of_another_request_is_refused(groups_image: hostkit.Image) -> None:
    other = _request(groups_image)
    req = _request(groups_image)  # supersedes the other: same scope, same shares, new id
    line = hostkit.signed_approval(
        req, groups_image.approvers["alice"], T0, request_digest=other.digest
    )
    _refused(groups_image, req.id, line, "approval names a different request digest")


def test_approval_for_another_request_id_is_refused(groups_image: hostkit.Image) -> None:
    other = _request(groups_image)
    req = _request(groups_image)
    line = hostkit.signed_approval(req, groups_image.approvers["alice"], T0, request_id=other.id)
    _refused(groups_image, req.id, line, "approval is for another request")


def test_approval_signed_by_another_approver_is_refused(groups_image: hostkit.Image) -> None:
    req = _request(groups_image)
    # bob signs an approval in alice's name, with alice's share re-encrypted
    share = load_approval(hostkit.lib_approve(req, groups_image.approvers["alice"], T0)).share
    line = hostkit.signed_approval(
        req, groups_image.approvers["bob"], T0, approver="alice", share=share
    )
    _refused(
        groups_image, req.id, line, "approval signature does not verify with the approver's key"
    )


def test_share_not_for_the_request_identity_is_refused(groups_image: hostkit.Image) -> None:
    req = _request(groups_image)
    from builder.core import agecrypt

    # alice's real share, but encrypted to a key other than the request's ephemeral one
    plain = agecrypt.decrypt(
        req.shares["alice"],
        agecrypt.load_identities(groups_image.approvers["alice"].identity),
        what="share",
    )
    elsewhere = agecrypt.encrypt(plain, [agecrypt.public_of(agecrypt.generate_x25519())])
    line = hostkit.signed_approval(req, groups_image.approvers["alice"], T0, share=elsewhere)
    _refused(
        groups_image, req.id, line, "approval share does not decrypt with the request's identity"
    )


def test_progress_says_what_counts_and_what_is_missing() -> None:
    assert progress((), 2) == "accepted 0 approvals; 2 more needed"
    assert progress(("alice",), 2) == "accepted 1 approval (alice); 1 more needed"
    assert progress(("alice", "bob"), 3) == "accepted 2 approvals (alice, bob); 1 more needed"
    assert progress(("alice", "bob"), 2) == "accepted 2 approvals (alice, bob); 0 more needed"
    assert progress(("alice", "bob", "carol"), 2).endswith("; 0 more needed")


def test_approval_is_not_kept_in_a_folder_others_can_write(image: hostkit.Image) -> None:
    # a planted approvals folder that others may write is refused by name, relative to the root
    req = _request(image)
    planted = Layout(image.root).approvals_dir(req.id)
    planted.mkdir(parents=True, exist_ok=True)
    planted.chmod(0o777)
    alice = hostkit.lib_approve(req, image.approvers["alice"], T0)
    with pytest.raises(StateError) as caught:
        unseal(image.root, T0, req.id, [alice])
    assert caught.value.message.startswith(f"unsafe directory {planted.relative_to(image.root)}: ")
    assert load(image.root).pending is not None
    assert load(image.root).pending.approvals == ()  # type: ignore[union-attr]


def test_activation_failure_names_the_unsafe_folder(image: hostkit.Image) -> None:
    # a scope folder planted so others may write it: nothing is decrypted into it, and the
    # refusal says which folder and why, not just that a write failed
    req = _request(image)
    alice = hostkit.lib_approve(req, image.approvers["alice"], T0)
    unseal(image.root, T0, req.id, [alice])
    planted = image.root / "run/breakglass/ssh-emergency"
    planted.mkdir(parents=True, exist_ok=True)
    planted.chmod(0o777)
    bob = hostkit.lib_approve(req, image.approvers["bob"], T0)
    with pytest.raises(CheckFailed) as caught:
        unseal(image.root, T0, req.id, [bob])
    assert caught.value.message.startswith("activation failed: unsafe directory ")
    assert hostkit.plaintext_files(image.root) == []
    failed = _events(image, "activation-failed")
    assert [e["details"]["reason"] for e in failed] == [  # type: ignore[index]
        caught.value.message.removeprefix("activation failed: ")
    ]


# Every approval of one unseal is checked at once (each signature by its own ssh-keygen):
# the answers, the order of the audit and what is left behind are those of one at a time.


def _children() -> set[str]:
    return {
        pid
        for task in Path("/proc/self/task").iterdir()
        for pid in (task / "children").read_text().split()
    }


@pytest.fixture
def temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where this test's temporary folders go, to see that none is left."""
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _forged(image: hostkit.Image, req, name: str, signer: str) -> str:  # type: ignore[no-untyped-def]
    """``signer`` signs an approval in ``name``'s name, with ``name``'s real share."""
    share = load_approval(hostkit.lib_approve(req, image.approvers[name], T0)).share
    return hostkit.signed_approval(req, image.approvers[signer], T0, approver=name, share=share)


def test_approvals_given_together_count_as_one_at_a_time(image: hostkit.Image, temp: Path) -> None:
    req = _request(image)
    before = _children()
    forged = _forged(image, req, "alice", "bob")
    bob, alice = (hostkit.lib_approve(req, image.approvers[n], T0) for n in ("bob", "alice"))
    r = unseal(image.root, T0, req.id, [forged, bob, alice])
    reason = "approval signature does not verify with the approver's key"
    assert (r.phase, r.approvals, r.refused) == ("ACTIVE", ("bob", "alice"), (reason,))
    kinds = [e["event"] for e in audit.read_events(Layout(image.root))]
    assert kinds[1:4] == ["approval-refused", "approval-accepted", "approval-accepted"]
    assert _events(image, "approval-refused")[0]["details"] == {
        "approver": "alice",
        "reason": reason,
    }
    assert list(temp.iterdir()) == [] and _children() <= before


def test_a_refused_approval_does_not_count_its_approver(image: hostkit.Image, temp: Path) -> None:
    # alice's forged approval, then her real one, in one call: the real one counts, as it
    # would have in a call of its own; after it, a third is "already counted"
    req = _request(image)
    forged = _forged(image, req, "alice", "bob")
    alice = hostkit.lib_approve(req, image.approvers["alice"], T0)
    again = hostkit.lib_approve(req, image.approvers["alice"], T0 + dt.timedelta(seconds=1))
    with pytest.raises(CheckFailed) as caught:
        unseal(image.root, T0, req.id, [forged, alice, again])
    assert caught.value.message == (
        "approval refused: approval signature does not verify with the approver's key; "
        "accepted 1 approval (alice); 1 more needed"
    )
    assert [e["details"]["reason"] for e in _events(image, "approval-refused")] == [  # type: ignore[index]
        "approval signature does not verify with the approver's key",
        "approver already counted",
    ]
    assert load(image.root).pending.approvals == ("alice",)  # type: ignore[union-attr]
    assert list(temp.iterdir()) == []


def test_a_stored_approval_that_no_longer_verifies_stops_the_unseal(
    image: hostkit.Image, temp: Path
) -> None:
    # the approvals folder is the host's, yet each stored approval is checked again: one
    # rewritten since stops the unseal, and the approvals given with it are not taken
    req = _request(image)
    unseal(image.root, T0, req.id, [hostkit.lib_approve(req, image.approvers["alice"], T0)])
    stored = Layout(image.root).approvals_dir(req.id) / "alice.json"
    stored.write_bytes(load_approval(_forged(image, req, "alice", "carol")).canonical())
    before = _children()
    bob = hostkit.lib_approve(req, image.approvers["bob"], T0)
    with pytest.raises(CheckFailed) as caught:
        unseal(image.root, T0, req.id, [bob])
    assert caught.value.message == (
        "stored approval of alice no longer verifies "
        "(approval signature does not verify with the approver's key)"
    )
    assert load(image.root).pending.approvals == ("alice",)  # type: ignore[union-attr]
    assert _events(image, "approval-accepted")[-1]["details"]["approver"] == "alice"  # type: ignore[index]
    assert hostkit.plaintext_files(image.root) == []
    assert list(temp.iterdir()) == [] and _children() <= before


def test_checks_started_before_one_that_cannot_start_are_stopped(
    image: hostkit.Image, temp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from builder.core import sshsig

    req = _request(image)
    alice, bob = (hostkit.lib_approve(req, image.approvers[n], T0) for n in ("alice", "bob"))
    real = sshsig.Verifying
    started: list[sshsig.Verifying] = []

    def second_fails(*args: object) -> sshsig.Verifying:
        if started:
            raise OSError("no more processes")
        started.append(real(*args))  # type: ignore[arg-type]
        return started[0]

    monkeypatch.setattr(sshsig, "Verifying", second_fails)
    with pytest.raises(OSError):
        unseal(image.root, T0, req.id, [alice, bob])
    assert started[0]._proc.returncode is not None
    assert list(temp.iterdir()) == []
    assert load(image.root).pending.approvals == ()  # type: ignore[union-attr]


def test_slip39_is_loaded_while_the_checks_run_only_when_they_may_meet_the_quorum(
    image: hostkit.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    from builder.host import unseal as unseal_module

    loads: list[None] = []
    real = unseal_module._load_activation
    monkeypatch.setattr(unseal_module, "_load_activation", lambda: loads.append(real()))
    req = _request(image)
    alice, bob = (hostkit.lib_approve(req, image.approvers[n], T0) for n in ("alice", "bob"))
    assert unseal(image.root, T0, req.id, [alice]).phase == "PENDING"
    assert loads == []  # one of two needed: the first approval does not pay for SLIP-39
    assert unseal(image.root, T0, req.id, [bob]).phase == "ACTIVE"
    assert loads == [None]
