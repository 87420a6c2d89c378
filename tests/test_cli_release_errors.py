"""Error paths of the release commands (seal, build, keygen), through the real CLI.

Each refusal exits 2 with one ``breakglass: error:`` line (and at most one
``hint:``), and leaves every file as it was.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.release.bundle import SealedBundle
from tests.conftest import ROOT, require_tool

SPEC = "images/example.yaml"
BUNDLE = "images/example.sealed.yaml"
ENROLMENT = "images/example.enrolment.json"
TOKEN_VAR = "BG_RELEASE_TEST_TOKEN"


def run(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("SOURCE_DATE_EPOCH", TOKEN_VAR):
        base.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "builder", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    return {
        p.relative_to(root).as_posix(): (p.lstat().st_mode, p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def refused(proc: subprocess.CompletedProcess[str], message: str, hint: str | None = None) -> str:
    """Assert a clean refusal: exit 2, one error line containing ``message``, the hint if any."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stdout}{proc.stderr}"
    lines = proc.stderr.splitlines()
    assert lines and lines[0].startswith("breakglass: error: "), lines
    assert "internal error" not in lines[0]
    assert message in lines[0], lines[0]
    if hint is None:
        assert len(lines) <= 2 and all(line.startswith("hint: ") for line in lines[1:]), lines
    else:
        assert len(lines) == 2 and lines[1].startswith("hint: ") and hint in lines[1], lines
    return lines[0]


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    """A project laid out like the repository: the example spec, its committed bundle,
    the templates and a copy of the demo release key (0600, as ssh-keygen wants)."""
    root = tmp_path / "proj"
    (root / "images").mkdir(parents=True)
    for name in (SPEC, BUNDLE, ENROLMENT):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "templates", root / "templates")
    (root / "keys").mkdir()
    for name in ("release", "release.pub"):
        shutil.copy(ROOT / "examples" / "keys" / name, root / "keys" / name)
    (root / "keys" / "release").chmod(0o600)
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new), encoding="utf-8")


# -- seal ---------------------------------------------------------------------


def test_seal_refuses_to_replace_a_bundle_without_rotate(proj: Path) -> None:
    before = snapshot(proj)
    line = refused(run(proj, "seal", SPEC), "sealed bundle already exists", hint="--rotate")
    assert line.startswith(f"breakglass: error: {BUNDLE}: ")
    assert snapshot(proj) == before


def test_seal_rotate_replaces_bundle_and_enrolment(proj: Path) -> None:
    old_bundle = SealedBundle.from_bytes((proj / BUNDLE).read_bytes(), BUNDLE)
    old_enrolment = (proj / ENROLMENT).read_bytes()
    proc = run(proj, "seal", "--rotate", SPEC)
    assert proc.returncode == 0, proc.stderr
    assert f"-> {BUNDLE}" in proc.stdout
    new_bundle = SealedBundle.from_bytes((proj / BUNDLE).read_bytes(), BUNDLE)
    assert new_bundle.policy_digest == old_bundle.policy_digest
    assert [s.name for s in new_bundle.scopes] == [s.name for s in old_bundle.scopes]
    for old, new in zip(old_bundle.scopes, new_bundle.scopes, strict=True):
        assert new.unseal_recipient != old.unseal_recipient, "rotation must make a fresh unseal key"
    assert (proj / ENROLMENT).read_bytes() != old_enrolment
    assert sorted(p.name for p in (proj / "images").iterdir()) == sorted(
        Path(n).name for n in (SPEC, BUNDLE, ENROLMENT)
    ), "seal left a temporary file"
    assert run(proj, "lint", SPEC).returncode == 0


def test_seal_with_an_unset_environment_variable_names_it_and_writes_nothing(proj: Path) -> None:
    (proj / BUNDLE).unlink()
    (proj / ENROLMENT).unlink()
    edit(proj / SPEC, "    generate: token\n", f"    from_env: {TOKEN_VAR}\n    kind: token\n")
    before = snapshot(proj)
    for env in ({}, {TOKEN_VAR: ""}):
        proc = run(proj, "seal", SPEC, env=env)
        line = refused(proc, f"environment variable {TOKEN_VAR} is not set")
        assert "deploy-token" in line
        assert len(proc.stderr.splitlines()) == 1
        assert proc.stdout == ""
        assert snapshot(proj) == before

    # and with the variable set, the value reaches no file and no output
    token = "release-test-token-8c1d2e3f4a5b6c7d8e9f"
    proc = run(proj, "seal", SPEC, env={TOKEN_VAR: token})
    assert proc.returncode == 0, proc.stderr
    assert token not in proc.stdout + proc.stderr
    for path in (proj / "images").iterdir():
        assert token.encode() not in path.read_bytes(), path


# -- build --------------------------------------------------------------------


def build(proj: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(proj, "build", SPEC, "--out", "dist", "--sign-key", "keys/release", *extra)


def test_build_with_a_stale_bundle_asks_to_reseal(proj: Path) -> None:
    require_tool("ssh-keygen")
    text = (proj / SPEC).read_text(encoding="utf-8")
    carol = text[text.index("  - name: carol\n") : text.index("\npolicy:")]
    edit(proj / SPEC, carol, "")
    before = snapshot(proj)
    for proc in (build(proj), run(proj, "lint", SPEC)):
        refused(proc, "sealed bundle is stale", hint="breakglass seal --rotate")
        assert proc.stderr.startswith(f"breakglass: error: {BUNDLE}: ")
    assert snapshot(proj) == before
    assert not (proj / "dist").exists()


def test_build_refuses_to_overwrite_a_version_with_different_content(proj: Path) -> None:
    require_tool("ssh-keygen")
    first = build(proj)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("built: example 1.0.0")
    built = snapshot(proj / "dist")

    # identical inputs: nothing to do
    again = build(proj)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("unchanged")
    assert snapshot(proj / "dist") == built

    # same version, different content: refused, output untouched
    edit(proj / SPEC, "https://deploy.example.internal", "https://deploy2.example.internal")
    line = refused(build(proj), "version 1.0.0 of example already exists", hint="breakglass bump")
    assert "dist/example/1.0.0" in line
    assert snapshot(proj / "dist") == built

    # after a bump the new content gets its own version; the old one stays as it was
    assert run(proj, "bump", SPEC).returncode == 0
    bumped = build(proj)
    assert bumped.returncode == 0, bumped.stderr
    assert (proj / "dist/example/1.0.1/breakglass-manifest.json.sig").is_file()
    # (the build's record of its inputs, dist/.breakglass-build, now describes 1.0.1)
    kept = {k: v for k, v in snapshot(proj / "dist").items() if "1.0.1" not in k}
    assert {k: v for k, v in kept.items() if not k.startswith(".breakglass-build/")} == {
        k: v for k, v in built.items() if not k.startswith(".breakglass-build/")
    }


def _truncate_armor(text: str) -> str:
    end = "-----END AGE ENCRYPTED FILE-----"
    at = text.index(end)
    return text[: text.rindex("\n", 0, at)] + text[text.index("\n", at) :]


def _cut_in_half(text: str) -> str:
    return text[: len(text) // 2]


def _bad_yaml(text: str) -> str:
    return text.replace("group_threshold: 1", "group_threshold: [1", 1)


def _unknown_key(text: str) -> str:
    return text.replace("image: example\n", "image: example\nsigned_by: mallory\n", 1)


def _wrong_format(text: str) -> str:
    return text.replace("breakglass-sealed-bundle/1", "breakglass-sealed-bundle/9", 1)


def _not_armor(text: str) -> str:
    begin = "-----BEGIN AGE ENCRYPTED FILE-----"
    return text.replace(begin, "-----BEGIN PGP MESSAGE-----", 1)


def _drop_last_scope(text: str) -> str:
    return text[
        : text.rindex(
            "- name: ", 0, text.index("unseal_recipient", text.index("unseal_recipient") + 1)
        )
    ]


def _empty(text: str) -> str:
    return ""


CORRUPTIONS: list[object] = [
    pytest.param(_bad_yaml, "malformed yaml", id="bad-yaml"),
    pytest.param(_unknown_key, "unknown key 'signed_by' in the sealed bundle", id="unknown-key"),
    pytest.param(_wrong_format, "unsupported sealed bundle format", id="wrong-format"),
    pytest.param(_not_armor, "is not an armored age file", id="not-armor"),
    pytest.param(_empty, "the sealed bundle must be a mapping", id="empty"),
    pytest.param(_truncate_armor, "truncated armor", id="truncated-armor"),
    pytest.param(_cut_in_half, "truncated armor", id="cut-in-half"),
    pytest.param(_drop_last_scope, "sealed bundle scopes differ from the spec's", id="lost-scope"),
]


@pytest.mark.parametrize(("corrupt", "message"), CORRUPTIONS)
def test_build_refuses_a_corrupt_bundle(
    proj: Path, corrupt: Callable[[str], str], message: str
) -> None:
    path = proj / BUNDLE
    path.write_text(corrupt(path.read_text(encoding="utf-8")), encoding="utf-8")
    before = snapshot(proj)
    proc = run(proj, "build", SPEC, "--out", "dist")
    line = refused(proc, message)
    assert line.startswith(f"breakglass: error: {BUNDLE}")
    assert snapshot(proj) == before
    assert not (proj / "dist").exists()


def test_build_refuses_a_bundle_that_is_not_utf8(proj: Path) -> None:
    (proj / BUNDLE).write_bytes(b"\xff\xfe" + os.urandom(64))
    before = snapshot(proj)
    refused(run(proj, "build", SPEC, "--out", "dist"), "not UTF-8")
    assert snapshot(proj) == before


# -- keygen -------------------------------------------------------------------


def keygen(cwd: Path, name: str) -> subprocess.CompletedProcess[str]:
    return run(cwd, "keygen", "--name", name, "--out", "approver-keys")


def test_keygen_makes_private_files_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    proc = keygen(tmp_path, "dave")
    assert proc.returncode == 0, proc.stderr
    keys = tmp_path / "approver-keys"
    private = [keys / "dave", keys / "dave.age"]
    for path in private:
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert (keys / "dave.pub").stat().st_mode & 0o022 == 0, "public key writable by others"
    assert keys.stat().st_mode & 0o077 == 0, "key folder open to others"
    assert "AGE-SECRET-KEY-" in (keys / "dave.age").read_text()
    assert "AGE-SECRET-KEY-" not in proc.stdout, "the identity must not be printed"

    def state() -> dict[str, tuple[int, bytes]]:
        return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(keys.iterdir())}

    before = state()
    refused(keygen(tmp_path, "dave"), "refusing to overwrite existing key file")
    assert state() == before

    # one file left from an earlier run is enough to refuse, and nothing new appears
    for path in private:
        path.unlink()
    left = state()
    refused(keygen(tmp_path, "dave"), "refusing to overwrite existing key file")
    assert state() == left

    refused(keygen(tmp_path, "Dave Smith"), "must be lowercase letters, digits and dashes")
    assert state() == left


def test_keygen_output_pasted_into_a_spec_lints(proj: Path) -> None:
    require_tool("ssh-keygen")
    pasted = []
    for name in ("dave", "erin", "frank"):
        proc = keygen(proj, name)
        assert proc.returncode == 0, proc.stderr
        assert f"  - name: {name}\n" in proc.stdout
        pasted.append(proc.stdout)
    text = (proj / SPEC).read_text(encoding="utf-8")
    start, end = text.index("approvers:\n"), text.index("\npolicy:")
    (proj / SPEC).write_text(
        text[:start] + "approvers:\n" + "".join(pasted) + text[end:], encoding="utf-8"
    )
    (proj / BUNDLE).unlink()
    proc = run(proj, "lint", SPEC)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{SPEC}: ok (2 scopes, 3 approvers")
    assert "not sealed yet" in proc.stdout
