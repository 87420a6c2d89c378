"""Seal: the bundle opens only with a quorum, per scope, and interoperates with age and SLIP-39."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
import shamir_mnemonic

from builder.core import agecrypt, shares
from builder.core.errors import InputError
from builder.core.secret import Secret
from builder.release.bundle import SealedBundle
from builder.release.seal import seal
from builder.release.spec import load_spec
from tests.conftest import require_tool, run_cli

CANARY = "canary-token-7f3a9d1e5b2c4680aa11"
NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def sealed(example_project: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, SealedBundle]:
    text = example_project.read_text()
    text = text.replace("generate: token", "from_env: BG_TEST_CANARY\n    kind: token")
    example_project.write_text(text)
    monkeypatch.setenv("BG_TEST_CANARY", CANARY)
    result = seal(load_spec(example_project), NOW, rotate=True)
    return example_project, result.bundle


def _share(bundle: SealedBundle, scope: str, approver: str, keys: Path) -> Secret:
    identities = agecrypt.load_identities(keys / f"{approver}.age")
    return agecrypt.decrypt(bundle.scope(scope).shares[approver], identities, what="share")


def test_age_cli_decrypts_an_approvers_share(
    sealed: tuple[Path, SealedBundle], demo_keys: Path, tmp_path: Path
) -> None:
    require_tool("age")
    _, bundle = sealed
    ciphertext = tmp_path / "share.age"
    ciphertext.write_text(bundle.scope("agent-backup").shares["alice"])
    out = subprocess.run(
        ["age", "-d", "-i", str(demo_keys / "alice.age"), str(ciphertext)],
        capture_output=True,
        check=True,
    ).stdout.decode()
    # a SLIP-39 mnemonic of 33 words (256-bit secret), valid for any SLIP-39 tool
    assert len(out.split()) == 33
    assert shamir_mnemonic.share.Share.from_mnemonic(out.strip()).index >= 0
    # bob's identity cannot read alice's share
    wrong = subprocess.run(
        ["age", "-d", "-i", str(demo_keys / "bob.age"), str(ciphertext)], capture_output=True
    )
    assert wrong.returncode != 0


def test_quorum_opens_the_scope_and_fewer_do_not(
    sealed: tuple[Path, SealedBundle], demo_keys: Path
) -> None:
    _, bundle = sealed
    scope = bundle.scope("agent-backup")
    got = [_share(bundle, "agent-backup", name, demo_keys) for name in ("alice", "carol")]
    unseal_key = agecrypt.identity_from_secret(shares.combine(got))
    assert agecrypt.public_of(unseal_key) == scope.unseal_recipient
    (token,) = scope.credentials
    assert (
        agecrypt.decrypt(token.ciphertext, [unseal_key], what="token").reveal() == CANARY.encode()
    )
    with pytest.raises(InputError, match="cannot combine shares"):
        shares.combine(got[:1])


def test_same_share_twice_is_not_a_quorum(
    sealed: tuple[Path, SealedBundle], demo_keys: Path
) -> None:
    _, bundle = sealed
    alice = _share(bundle, "agent-backup", "alice", demo_keys)
    with pytest.raises(InputError):
        shares.combine([alice, alice])


def test_shares_of_one_scope_do_not_open_another(
    sealed: tuple[Path, SealedBundle], demo_keys: Path
) -> None:
    _, bundle = sealed
    got = [_share(bundle, "ssh-emergency", name, demo_keys) for name in ("alice", "bob")]
    ssh_key = agecrypt.identity_from_secret(shares.combine(got))
    assert agecrypt.public_of(ssh_key) != bundle.scope("agent-backup").unseal_recipient
    (token,) = bundle.scope("agent-backup").credentials
    with pytest.raises(InputError, match="cannot decrypt"):
        agecrypt.decrypt(token.ciphertext, [ssh_key], what="token")
    # and mixing shares across scopes fails too
    mixed = [got[0], _share(bundle, "agent-backup", "bob", demo_keys)]
    with pytest.raises(InputError):
        shares.combine(mixed)


def test_generated_ssh_key_matches_its_public_part(
    sealed: tuple[Path, SealedBundle], demo_keys: Path, tmp_path: Path
) -> None:
    require_tool("ssh-keygen")
    _, bundle = sealed
    scope = bundle.scope("ssh-emergency")
    got = [_share(bundle, "ssh-emergency", name, demo_keys) for name in ("bob", "carol")]
    key = agecrypt.identity_from_secret(shares.combine(got))
    (cred,) = scope.credentials
    private = tmp_path / "id"
    private.write_bytes(agecrypt.decrypt(cred.ciphertext, [key], what="key").reveal())
    private.chmod(0o600)
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(private)], capture_output=True, check=True, text=True
    )
    assert cred.public is not None and derived.stdout.split()[:2] == cred.public.split()[:2]
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", str(private)], capture_output=True, check=True, text=True
    )
    assert cred.fingerprint is not None and cred.fingerprint in fingerprint.stdout


def test_bundle_and_enrolment_hold_no_plaintext(sealed: tuple[Path, SealedBundle]) -> None:
    spec_path, bundle = sealed
    for path in (
        spec_path.with_name("example.sealed.yaml"),
        spec_path.with_name("example.enrolment.json"),
    ):
        assert CANARY not in path.read_text()
    assert SealedBundle.from_bytes(bundle.to_bytes(), "x") == bundle


def test_seal_cli_prints_no_secret(example_project: Path) -> None:
    text = example_project.read_text().replace(
        "generate: token", "from_env: BG_TEST_CANARY\n    kind: token"
    )
    example_project.write_text(text)
    result = run_cli("seal", "--rotate", example_project, env={"BG_TEST_CANARY": CANARY})
    assert result.returncode == 0, result.stderr
    assert CANARY not in result.stdout + result.stderr
    assert "sealed 2 scopes" in result.stdout
