"""Verify: ssh-keygen accepts our signature, and any flipped byte is caught and named."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool, run_cli


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import DEMO_KEYS, ROOT

    work = tmp_path_factory.mktemp("verify")
    keys = work / "keys"
    shutil.copytree(DEMO_KEYS, keys)
    (keys / "release").chmod(0o600)
    result = run_cli(
        "build",
        ROOT / "images/example.yaml",
        "--out",
        work / "dist",
        "--sign-key",
        keys / "release",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    return Path(json.loads(result.stdout)["image_dir"])


def verify(image_dir: Path) -> subprocess.CompletedProcess[str]:
    from tests.conftest import DEMO_KEYS

    return run_cli("verify", image_dir, "--allowed-signers", DEMO_KEYS / "allowed_signers")


def test_ssh_keygen_accepts_the_manifest_signature(image: Path) -> None:
    from tests.conftest import DEMO_KEYS

    require_tool("ssh-keygen")
    manifest = (image / "breakglass-manifest.json").read_bytes()
    proc = subprocess.run(
        [
            "ssh-keygen",
            "-Y",
            "verify",
            "-f",
            str(DEMO_KEYS / "allowed_signers"),
            "-I",
            "release",
            "-n",
            "breakglass-manifest",
            "-s",
            str(image / "breakglass-manifest.json.sig"),
        ],
        input=manifest,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert verify(image).returncode == 0


def _flippable(image: Path) -> list[Path]:
    files = sorted(p for p in image.rglob("*") if p.is_file())
    assert len(files) >= 7
    return files


@pytest.mark.parametrize("which", range(7))
def test_one_flipped_byte_anywhere_fails_verify(image: Path, tmp_path: Path, which: int) -> None:
    copy = tmp_path / "image"
    shutil.copytree(image, copy)
    target = _flippable(copy)[which]
    data = bytearray(target.read_bytes())
    # flip a byte in the middle: past headers, inside the content that matters
    at = len(data) // 2
    data[at] ^= 0x01
    target.write_bytes(bytes(data))
    result = verify(copy)
    assert result.returncode != 0, f"flip in {target.relative_to(copy)} went unnoticed"
    assert result.stderr.startswith("breakglass: error: ")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_unknown_signer_is_refused(image: Path, tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
    )
    pub = (tmp_path / "other.pub").read_text().split()
    signers = tmp_path / "allowed"
    signers.write_text(f'release namespaces="breakglass-manifest" {pub[0]} {pub[1]}\n')
    result = run_cli("verify", image, "--allowed-signers", signers)
    assert result.returncode == 1
    assert "signature does not verify" in result.stderr


def test_inspect_summarises_the_image(image: Path) -> None:
    result = run_cli("inspect", image, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["version"] == "1.0.0" and info["signed"] is True
    assert info["approvers"] == ["alice", "bob", "carol"]
    assert [s["name"] for s in info["scopes"]] == ["ssh-emergency", "agent-backup"]
    assert info["groups"][0]["threshold"] == 2
