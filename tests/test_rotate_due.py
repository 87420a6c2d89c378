"""The scheduled rotation's steps (scripts/rotate-due.sh, as the workflow runs them) on a real
example project: a bundle past rotate_by is re-sealed and bumped, and no plaintext shows."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

from builder.core import agecrypt, shares
from builder.fleet.drift import load_enrolment
from builder.release.bundle import SealedBundle
from builder.release.seal import seal
from builder.release.spec import load_spec
from tests.conftest import ROOT

SCRIPT = ROOT / "scripts/rotate-due.sh"
LONG_AGO = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def run_script(project: Path, *specs: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{ROOT / '.venv/bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("GITHUB_OUTPUT", None)
    return subprocess.run(
        ["sh", str(SCRIPT), *specs],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def snapshot(project: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(project)): p.read_bytes()
        for p in sorted(project.rglob("*"))
        if p.is_file()
    }


def plaintexts(bundle: SealedBundle, keys: Path) -> list[bytes]:
    """Open every scope with two demo approvers: the secrets the new seal made."""
    found = []
    for scope in bundle.scopes:
        got = [
            agecrypt.decrypt(
                scope.shares[a], agecrypt.load_identities(keys / f"{a}.age"), what="share"
            )
            for a in ("alice", "bob")
        ]
        unseal_key = agecrypt.identity_from_secret(shares.combine(got))
        for c in scope.credentials:
            found.append(agecrypt.decrypt(c.ciphertext, [unseal_key], what=c.name).reveal())
    return found


def test_overdue_bundle_is_resealed_and_bumped_without_plaintext(
    example_project: Path, demo_keys: Path
) -> None:
    project = example_project.parent.parent
    seal(load_spec(example_project), LONG_AGO, rotate=True)
    old_enrolment = load_enrolment(example_project.with_name("example.enrolment.json"))
    before = snapshot(project)

    proc = run_script(project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        "images/example.yaml: rotated 1.0.0 -> 1.0.1: agent-backup (overdue), ssh-emergency (overdue)"
        in proc.stdout
    )
    assert "== drift: images/example.yaml" in proc.stdout and "overdue" in proc.stdout

    after = snapshot(project)
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed == {
        "images/example.yaml",
        "images/example.sealed.yaml",
        "images/example.enrolment.json",
    }
    spec_text = after["images/example.yaml"].decode()
    assert "version: 1.0.1" in spec_text and "# two-person rule" in spec_text  # comments kept
    bundle = SealedBundle.from_bytes(after["images/example.sealed.yaml"], "bundle")
    assert bundle.rotate_by is not None and str(bundle.rotate_by) > "2026"
    new_enrolment = load_enrolment(example_project.with_name("example.enrolment.json"))
    old_fp = {c.name: c.fingerprint for c in old_enrolment.credentials}
    assert all(old_fp[c.name] != c.fingerprint for c in new_enrolment.credentials)

    secrets = plaintexts(bundle, demo_keys)
    assert len(secrets) == 2 and all(len(s) >= 16 for s in secrets)
    output = (proc.stdout + proc.stderr).encode()
    for secret in secrets:
        for line in secret.strip().splitlines():
            if len(line) >= 16:
                assert line not in output
                assert not any(line in data for data in after.values())
    assert b"PRIVATE KEY" not in output and not any(b"PRIVATE KEY" in d for d in after.values())

    again = run_script(project)
    assert again.returncode == 0 and "images/example.yaml: not due" in again.stdout
    assert snapshot(project) == after


def test_supplied_credential_due_fails_with_a_summary_and_changes_nothing(
    example_project: Path,
) -> None:
    project = example_project.parent.parent
    text = example_project.read_text().replace(
        "generate: token", "from_env: DEPLOY_TOKEN\n    kind: token"
    )
    example_project.write_text(text)
    os.environ["DEPLOY_TOKEN"] = "supplied-token-value-0123456789"
    try:
        seal(load_spec(example_project), LONG_AGO, rotate=True)
    finally:
        del os.environ["DEPLOY_TOKEN"]
    before = snapshot(project)
    proc = run_script(project)
    assert proc.returncode == 1
    assert "DUE but not rotatable here" in proc.stdout
    assert "agent-backup/deploy-token (env DEPLOY_TOKEN)" in proc.stdout
    assert (
        "breakglass: error: 1 spec(s) due for rotation with credentials supplied from outside: images/example.yaml"
        in proc.stderr
    )
    assert snapshot(project) == before
