"""Drift: sealed public parts against an enrolment, through the library and the real CLI."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder.core import canonical
from builder.fleet import drift
from builder.release.seal import seal
from builder.release.spec import load_spec
from tests.conftest import ROOT

NOW = dt.datetime(2026, 11, 29, 19, 0, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def sealed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example spec, freshly sealed (generated credentials, public parts only kept)."""
    d = tmp_path_factory.mktemp("drift")
    shutil.copy(ROOT / "images/example.yaml", d / "example.yaml")
    seal(load_spec(d / "example.yaml"), NOW, rotate=False)
    return d


@pytest.fixture
def spec(sealed_dir: Path, tmp_path: Path) -> Path:
    for f in sealed_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / "example.yaml"


def enrolment(spec: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads(spec.with_name("example.enrolment.json").read_text())
    return doc


def write(path: Path, doc: object) -> Path:
    path.write_bytes(canonical.dumps(doc))
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "builder", "drift", *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)


def test_fresh_seal_is_in_sync(spec: Path) -> None:
    proc = run(str(spec), "--enrolment", str(spec.with_name("example.enrolment.json")), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert {c["status"] for c in report["credentials"]} == {"in-sync"}
    assert len(report["credentials"]) == 2


def test_changed_fingerprint_is_out_of_sync(spec: Path, tmp_path: Path) -> None:
    doc = enrolment(spec)
    creds = doc["credentials"]
    assert isinstance(creds, list)
    token = next(c for c in creds if c["kind"] == "token")
    token["public"] = token["fingerprint"] = "sha256:" + "0" * 64
    proc = run(str(spec), "--enrolment", str(write(tmp_path / "env.json", doc)))
    assert proc.returncode == 1
    assert "agent-backup/deploy-token: out-of-sync" in proc.stdout
    assert "ssh-emergency/emergency-ssh-key: in-sync" in proc.stdout
    assert "breakglass: error: drift found for image 'example'" in proc.stderr


def test_missing_and_stale_credentials(spec: Path, tmp_path: Path) -> None:
    doc = enrolment(spec)
    creds = doc["credentials"]
    assert isinstance(creds, list)
    ssh = next(c for c in creds if c["kind"] == "ssh-ed25519")
    ssh["name"] = "old-ssh-key"
    proc = run(str(spec), "--enrolment", str(write(tmp_path / "env.json", doc)), "--json")
    assert proc.returncode == 1
    status = {c["name"]: c["status"] for c in json.loads(proc.stdout)["credentials"]}
    assert status == {
        "emergency-ssh-key": "missing",
        "old-ssh-key": "stale",
        "deploy-token": "in-sync",
    }


def test_overdue_for_rotation(spec: Path) -> None:
    sealed = drift.sealed_from_bundle(spec.with_name("example.sealed.yaml"))
    env = drift.load_enrolment(spec.with_name("example.enrolment.json"))
    assert drift.compare(sealed, env.credentials, NOW).ok
    later = NOW + dt.timedelta(days=91)
    report = drift.compare(sealed, env.credentials, later)
    assert not report.ok and all(e.overdue for e in report.entries)
    # the CLI reads the real clock, well inside the rotation period of this seal
    proc = run(str(spec), "--enrolment", str(spec.with_name("example.enrolment.json")))
    assert proc.returncode == 0


def test_burned_scope_from_host_state(spec: Path, tmp_path: Path) -> None:
    sealed = drift.sealed_from_bundle(spec.with_name("example.sealed.yaml"))
    env = drift.load_enrolment(spec.with_name("example.enrolment.json"))
    report = drift.compare(sealed, env.credentials, NOW, burned=["agent-backup"])
    assert not report.ok
    assert {e.name for e in report.entries if e.burned} == {"deploy-token"}


def test_manifest_as_the_recorded_side(spec: Path, tmp_path: Path) -> None:
    sealed = drift.sealed_from_bundle(spec.with_name("example.sealed.yaml"))
    manifest = {
        "format": "breakglass-manifest/1",
        "image": {"name": "example", "version": "1.0.0", "description": ""},
        "sealed_bundle": {"rotate_by": "2099-01-01T00:00:00Z"},
        "scopes": [
            {
                "name": c.scope,
                "credentials": [
                    {
                        "name": c.name,
                        "kind": c.kind,
                        "public": c.public,
                        "fingerprint": c.fingerprint,
                    }
                ],
            }
            for c in sealed.credentials
        ],
    }
    path = write(tmp_path / "breakglass-manifest.json", manifest)
    env = str(spec.with_name("example.enrolment.json"))
    assert run(str(spec), "--enrolment", env, "--manifest", str(path)).returncode == 0
    manifest["scopes"][0]["credentials"][0]["fingerprint"] = "sha256:" + "1" * 64  # type: ignore[index]
    write(path, manifest)
    proc = run(str(spec), "--enrolment", env, "--manifest", str(path))
    assert proc.returncode == 1 and "out-of-sync" in proc.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "enrolment is not valid json"),
        ('{"format":"other","image":"example","credentials":[]}', "enrolment format is not"),
        (
            '{"format":"breakglass-enrolment/1","image":"example","credentials":[],"extra":1}',
            "unknown key 'extra'",
        ),
        (
            '{"format":"breakglass-enrolment/1","image":"other","credentials":[]}',
            "enrolment is for image 'other', not 'example'",
        ),
        (
            '{"format":"breakglass-enrolment/1","image":"example","credentials":[{"scope":1}]}',
            "needs a non-empty string 'scope'",
        ),
    ],
)
def test_bad_enrolment_is_one_line_error(
    spec: Path, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "env.json"
    path.write_text(content)
    proc = run(str(spec), "--enrolment", str(path))
    assert proc.returncode == 2
    assert proc.stderr.startswith("breakglass: error: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_sealed_bundle(spec: Path) -> None:
    spec.with_name("example.sealed.yaml").unlink()
    proc = run(str(spec), "--enrolment", str(spec.with_name("example.enrolment.json")))
    assert proc.returncode == 2 and "no sealed bundle beside the spec" in proc.stderr
