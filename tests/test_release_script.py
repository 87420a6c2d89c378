"""scripts/release.sh, the release workflow's steps, run locally with a freshly generated key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEMO_KEYS, ROOT, missing, require_tool

SCRIPT = ROOT / "scripts/release.sh"
WORKFLOW = ROOT / ".github/workflows/ci.yml"


def _release(tmp_path: Path, step: str = "build", **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    breakglass = bin_dir / "breakglass"
    if not breakglass.exists():
        missing("the breakglass console script, next to the test interpreter,")
    full = {**os.environ, "DIST": str(tmp_path / "dist"), "BREAKGLASS": str(breakglass),
            "PYTHON": sys.executable, **env}  # fmt: skip
    if "RELEASE_SSH_KEY" not in env:
        full.pop("RELEASE_SSH_KEY", None)  # a key in the caller's environment must not leak in
    return subprocess.run(
        ["bash", str(SCRIPT), step], cwd=ROOT, env=full, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture
def release_key(tmp_path: Path) -> Path:
    require_tool("ssh-keygen")
    key = tmp_path / "keys/release"
    key.parent.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "release", "-f", str(key)],
                   check=True, stdin=subprocess.DEVNULL)  # fmt: skip
    return key


def test_release_build_signs_with_the_key_in_use(release_key: Path, tmp_path: Path) -> None:
    r = _release(tmp_path, RELEASE_SSH_KEY=release_key.read_text())
    assert r.returncode == 0, r.stderr
    dist = tmp_path / "dist"
    image = dist / "example/1.0.0"
    assert r.stdout.rstrip().endswith(
        f"released {image}, signed by release; trust file: {dist}/allowed_signers"
    )
    pub = release_key.with_suffix(".pub").read_text().split()
    signers = (dist / "allowed_signers").read_text()
    assert signers == f'release namespaces="breakglass-manifest" {pub[0]} {pub[1]}\n'
    assert "ok: example 1.0.0 signed by release" in r.stdout
    # stock OpenSSH accepts the signature with the published trust file, and the demo one refuses it
    manifest = (image / "breakglass-manifest.json").read_bytes()
    for trust, ok in ((dist / "allowed_signers", True), (DEMO_KEYS / "allowed_signers", False)):
        check = subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", str(trust), "-I", "release", "-n",
             "breakglass-manifest", "-s", str(image / "breakglass-manifest.json.sig")],
            input=manifest, capture_output=True, check=False,
        )  # fmt: skip
        assert (check.returncode == 0) == ok, check.stderr
    assert not any(p.name == "release" for p in dist.rglob("*"))  # the private key stays out


def test_release_from_a_key_file(release_key: Path, tmp_path: Path) -> None:
    r = _release(tmp_path, RELEASE_SSH_KEY_FILE=str(release_key))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("case", ["none", "demo", "garbage"])
def test_release_refuses_a_missing_demo_or_bad_key(case: str, tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    env = {"none": {"RELEASE_SSH_KEY": ""},
           "demo": {"RELEASE_SSH_KEY_FILE": str(DEMO_KEYS / "release")},
           "garbage": {"RELEASE_SSH_KEY": "not a key"}}[case]  # fmt: skip
    r = _release(tmp_path, **env)
    assert r.returncode == 2
    assert r.stderr.startswith("release: error: "), r.stderr
    assert not (tmp_path / "dist").exists()


def test_workflow_pins_actions_by_sha_and_sigstore_by_version() -> None:
    text = WORKFLOW.read_text()
    uses = re.findall(r"uses:\s*(\S+)", text)
    assert uses and all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u) for u in uses), uses
    assert "scripts/release.sh build" in text and "scripts/release.sh sigstore" in text
    assert "sudo bash scripts/install-tools.sh" in text
    assert "examples/keys" not in text.split("release:", 1)[1]
    assert re.search(r"^SIGSTORE_VERSION=\d+\.\d+\.\d+$", SCRIPT.read_text(), re.M)


def test_sigstore_step_without_a_build_stops_before_installing(tmp_path: Path) -> None:
    r = _release(tmp_path, "sigstore")
    assert r.returncode == 2
    assert r.stderr == (
        f"release: error: no manifest under {tmp_path / 'dist'} to sign\n"
        "hint: run scripts/release.sh build first\n"
    )
