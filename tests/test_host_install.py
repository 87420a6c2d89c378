"""``host install``: a host root from a built image, verified first, all or nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import DEMO_KEYS, ROOT, require_tool, run_cli


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("ssh-keygen")
    work = tmp_path_factory.mktemp("install")
    shutil.copy(DEMO_KEYS / "release", work / "release")
    (work / "release").chmod(0o600)
    built = run_cli("build", ROOT / "images/example.yaml", "--out", work / "dist",
                    "--sign-key", work / "release", "--json")  # fmt: skip
    assert built.returncode == 0, built.stderr
    return Path(json.loads(built.stdout)["image_dir"])


def _copy(image: Path, dest: Path) -> Path:
    shutil.copytree(image, dest)
    return dest


def test_install_unpacks_the_payload_the_manifest_lists(image: Path, tmp_path: Path) -> None:
    root = tmp_path / "host"
    r = run_cli("host", "install", image, "--root", root, "--allowed-signers",
                DEMO_KEYS / "allowed_signers", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["verified_by"] == "release" and doc["version"] == "1.0.0"
    manifest = json.loads((image / "breakglass-manifest.json").read_bytes())
    assert (root / "etc/breakglass/manifest.json").read_bytes() == (
        image / "breakglass-manifest.json"
    ).read_bytes()
    for path, want in manifest["files"].items():
        assert (root / path).stat().st_mode & 0o7777 == want["mode"], path
    assert (root / "run/breakglass").stat().st_mode & 0o777 == 0o700
    assert (root / "var/lib/breakglass").stat().st_mode & 0o777 == 0o700
    status = run_cli("host", "status", "--root", root, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "DORMANT"


def test_install_without_signers_still_hashes_and_says_so(image: Path, tmp_path: Path) -> None:
    r = run_cli("host", "install", image, "--root", tmp_path / "host")
    assert r.returncode == 0, r.stderr
    assert "signature not checked" in r.stdout
    assert r.stderr == "hint: pass --allowed-signers FILE to verify the image first\n"


def test_install_refuses_a_tampered_blob_and_writes_nothing(image: Path, tmp_path: Path) -> None:
    bad = _copy(image, tmp_path / "img")
    index = json.loads((bad / "oci/index.json").read_bytes())
    blob = bad / "oci/blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]
    top = json.loads(blob.read_bytes())["layers"][-1]["digest"].split(":")[1]
    layer = bad / "oci/blobs/sha256" / top
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 1
    layer.write_bytes(bytes(data))
    for signers in ([], ["--allowed-signers", str(DEMO_KEYS / "allowed_signers")]):
        r = run_cli("host", "install", bad, "--root", tmp_path / "host", *signers)
        assert r.returncode == 1, r.stderr
        assert r.stderr.startswith("breakglass: error: ") and len(r.stderr.splitlines()) <= 2
        assert not (tmp_path / "host").exists()
        assert [p.name for p in tmp_path.iterdir()] == ["img"]  # no staging directory left


def test_install_refuses_a_foreign_signer(image: Path, tmp_path: Path) -> None:
    signers = tmp_path / "signers"
    other = (DEMO_KEYS / "alice.pub").read_text().split()
    signers.write_text(f'release namespaces="breakglass-manifest" {other[0]} {other[1]}\n')
    r = run_cli("host", "install", image, "--root", tmp_path / "host", "--allowed-signers", signers)
    assert r.returncode == 1 and "signature does not verify" in r.stderr
    assert not (tmp_path / "host").exists()


def test_install_refuses_an_occupied_root(image: Path, tmp_path: Path) -> None:
    root = tmp_path / "host"
    root.mkdir()
    (root / "keep").write_text("x")
    r = run_cli("host", "install", image, "--root", root)
    assert r.returncode == 2
    assert r.stderr == (
        f"breakglass: error: {root}: the host root already exists and is not empty\n"
        "hint: install into a new directory; a root holds one host's state\n"
    )
    assert sorted(p.name for p in root.iterdir()) == ["keep"]


def test_install_into_an_empty_directory(image: Path, tmp_path: Path) -> None:
    root = tmp_path / "host"
    root.mkdir()
    assert run_cli("host", "install", image, "--root", root).returncode == 0
    assert (root / "etc/breakglass/sealed.yaml").is_file()


def test_install_of_something_that_is_no_image(tmp_path: Path) -> None:
    r = run_cli("host", "install", tmp_path, "--root", tmp_path / "host")
    assert r.returncode == 2
    assert r.stderr.startswith("breakglass: error: ") and "no break-glass manifest" in r.stderr


def test_a_failed_install_keeps_an_empty_root_empty(image: Path, tmp_path: Path) -> None:
    bad = _copy(image, tmp_path / "img")
    (bad / "breakglass-manifest.json").write_bytes(b"{}")  # no longer the image's manifest
    root = tmp_path / "host"
    root.mkdir()
    r = run_cli("host", "install", bad, "--root", root)
    assert r.returncode != 0 and r.stderr.startswith("breakglass: error: ")
    assert root.is_dir() and not any(root.iterdir())
