"""``breakglass approve`` end to end: offline, two-person rule, confirmation, clean errors."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import pytest

from tests import hostkit


@pytest.fixture
def pending(tmp_path: Path) -> tuple[hostkit.Image, str, Path]:
    image = hostkit.clone(hostkit.shared_image(), tmp_path / "root")
    r = hostkit.run(
        "host", "request", "--root", str(image.root), "--scope", "ssh-emergency", "--ttl", "10m",
        "--reason", "db down", "--requester", "dave", "--out", str(tmp_path / "req.json"), "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return image, json.loads(r.stdout)["request_id"], tmp_path / "req.json"


def test_approve_needs_nothing_from_the_host(
    pending: tuple[hostkit.Image, str, Path], tmp_path: Path
) -> None:
    image, rid, req = pending
    elsewhere = tmp_path / "approver-machine"
    elsewhere.mkdir()
    shutil.copy(req, elsewhere / "request.json")
    hidden = tmp_path / "host-away"
    image.root.rename(hidden)  # the host's files do not exist while the approver works
    keys = image.approvers["alice"]
    env = {"HOME": str(elsewhere), "PATH": os.environ["PATH"]}
    r = hostkit.run(
        "approve", "request.json", "--identity", str(keys.identity), "--signing-key", str(keys.signing_key),
        "--approver", "alice", "--yes", env=env, cwd=elsewhere,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith("BREAKGLASS-APPROVAL-1:")
    # no prompt with --yes, but the terminal still shows what was approved
    assert f"request: {rid}" in r.stderr and "ssh-emergency" in r.stderr, r.stderr
    hidden.rename(image.root)
    u = hostkit.run("host", "unseal", "--root", str(image.root), rid, line, "--json")
    assert u.returncode == 0, u.stderr
    assert json.loads(u.stdout)["approvals"] == ["alice"]


def test_approve_accepts_the_armored_request_line(
    pending: tuple[hostkit.Image, str, Path], tmp_path: Path
) -> None:
    image, _rid, req = pending
    armored = "BREAKGLASS-REQUEST-1:" + base64.urlsafe_b64encode(req.read_bytes()).decode().rstrip(
        "="
    )
    keys = image.approvers["bob"]
    r = hostkit.run(
        "approve", armored, "--identity", str(keys.identity), "--signing-key", str(keys.signing_key),
        "--approver", "bob", "--yes", "--out", str(tmp_path / "bob.json"), "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "bob.json").read_text())["approver"] == "bob"


def test_approve_refuses_the_requester(
    pending: tuple[hostkit.Image, str, Path], tmp_path: Path
) -> None:
    image, _rid, req = pending
    keys = image.approvers["dave"]
    r = hostkit.run(
        "approve", str(req), "--identity", str(keys.identity), "--signing-key", str(keys.signing_key),
        "--approver", "dave", "--yes", "--out", str(tmp_path / "a.json"),
    )  # fmt: skip
    assert r.returncode == 2
    assert (
        r.stderr
        == "breakglass: error: the requester cannot approve their own request (two-person rule)\n"
    )
    assert not (tmp_path / "a.json").exists()


def test_approve_asks_for_confirmation(
    pending: tuple[hostkit.Image, str, Path], tmp_path: Path
) -> None:
    image, rid, req = pending
    keys = image.approvers["carol"]
    args = ["approve", str(req), "--identity", str(keys.identity), "--signing-key", str(keys.signing_key),
            "--approver", "carol", "--out", str(tmp_path / "c.json")]  # fmt: skip
    no = hostkit.run(*args, input=b"n\n")
    assert no.returncode == 1
    assert (
        "scope: ssh-emergency" in no.stderr and "reason: db down" in no.stderr and rid in no.stderr
    )
    assert "requester: dave" in no.stderr
    assert no.stdout == "" and not (tmp_path / "c.json").exists()
    yes = hostkit.run(*args, input=b"y\n")
    assert yes.returncode == 0, yes.stderr
    assert yes.stdout.startswith("BREAKGLASS-APPROVAL-1:")


def test_approve_with_the_wrong_identity_fails_cleanly(
    pending: tuple[hostkit.Image, str, Path],
) -> None:
    image, _rid, req = pending
    r = hostkit.run(
        "approve", str(req), "--identity", str(image.approvers["bob"].identity),
        "--signing-key", str(image.approvers["alice"].signing_key), "--approver", "alice", "--yes",
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.startswith("breakglass: error: cannot decrypt the share of alice")
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_approve_rejects_a_malformed_request(tmp_path: Path) -> None:
    bad = tmp_path / "req.json"
    bad.write_text('{"format": "breakglass-request/1", "id": "x"}')
    keys = hostkit.shared_image().approvers["alice"]
    r = hostkit.run(
        "approve", str(bad), "--identity", str(keys.identity), "--signing-key", str(keys.signing_key),
        "--approver", "alice", "--yes",
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.startswith("breakglass: error: request: missing field")


def _publish(manifest: bytes, where: Path) -> Path:
    """A published image dir (manifest + signature) and its allowed-signers file."""
    import subprocess

    where.mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(where / "release")], check=True
    )
    (where / "breakglass-manifest.json").write_bytes(manifest)
    from builder.core import sshsig

    sig = sshsig.sign(manifest, where / "release", sshsig.MANIFEST_NAMESPACE)
    (where / "breakglass-manifest.json.sig").write_text(sig)
    pub = (where / "release.pub").read_text().split()
    (where / "allowed").write_text(f'release namespaces="breakglass-manifest" {pub[0]} {pub[1]}\n')
    return where / "allowed"


def test_approve_checks_the_request_against_the_published_image(
    pending: tuple[hostkit.Image, str, Path], tmp_path: Path
) -> None:
    image, _rid, req = pending
    keys = image.approvers["alice"]
    manifest = (image.root / "etc/breakglass/manifest.json").read_bytes()
    args = ["approve", str(req), "--identity", str(keys.identity), "--signing-key", str(keys.signing_key),
            "--approver", "alice", "--yes"]  # fmt: skip
    allowed = _publish(manifest, tmp_path / "published")
    ok = hostkit.run(
        *args, "--image", str(tmp_path / "published"), "--allowed-signers", str(allowed)
    )
    assert ok.returncode == 0, ok.stderr
    # a request for an image whose manifest is not the published one is refused
    other = _publish(manifest.replace(b'"description":"', b'"description":"X'), tmp_path / "other")
    bad = hostkit.run(*args, "--image", str(tmp_path / "other"), "--allowed-signers", str(other))
    assert bad.returncode == 1
    assert "another image than the published one" in bad.stderr
    assert not bad.stdout.strip()
    # and an unsigned or wrongly signed publication is refused before anything else
    (tmp_path / "other" / "breakglass-manifest.json.sig").write_text(
        (tmp_path / "published" / "breakglass-manifest.json.sig").read_text()
    )
    forged = hostkit.run(*args, "--image", str(tmp_path / "other"), "--allowed-signers", str(other))
    assert forged.returncode == 1 and "signature does not verify" in forged.stderr
