"""Malformed specs, one file per case (tests/cases/specs), through the real CLI.

Each case states the error it expects in its header (see the folder's README).
``lint``, ``build`` and ``seal`` must each refuse it with exit code 2, exactly one
``breakglass: error:`` line naming ``file:line``, at most one ``hint:`` line, no
traceback, and must leave the working tree byte for byte as it was.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.core.canonical import dumps
from builder.core.errors import InputError
from builder.release.seal import seal_spec
from builder.release.spec import load_spec
from tests.conftest import ROOT

CASES_DIR = ROOT / "tests" / "cases" / "specs"
CASES = sorted(CASES_DIR.glob("*.yaml"))
ACCEPTED = sorted((CASES_DIR / "accepted").glob("*.yaml"))
NOW = dt.datetime(2026, 11, 29, 19, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    expect: str
    where: str  # "images/NAME.yaml:LINE:COL" or "templates/PATH:LINE"
    hint: str | None
    verify: str | None = None  # what verify says of a signed manifest with this case's policy


def read_case(path: Path) -> Case:
    """The case's expectation from its header comments; a case without one is a broken case."""
    header: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        key, sep, value = line[1:].strip().partition(": ")
        if sep and key in ("expect", "where", "hint", "verify", "fewest"):
            header[key] = value.strip()
    assert header.get("expect"), f"{path.name}: header has no '# expect:' line"
    assert header.get("where"), f"{path.name}: header has no '# where:' line"
    where = header["where"]
    if where[0].isdigit():
        where = f"images/{path.name}:{where}"
    return Case(path.stem, path, header["expect"], where, header.get("hint"), header.get("verify"))


def project(case: Case, tmp: Path) -> Path:
    """Lay the case out as a project: TMP/images/NAME.yaml, TMP/templates (+ the case's own)."""
    shutil.copytree(ROOT / "templates", tmp / "templates")
    own = case.path.with_name(f"{case.name}.templates")
    if own.is_dir():
        shutil.copytree(own, tmp / "templates", dirs_exist_ok=True)
    (tmp / "images").mkdir()
    shutil.copy(case.path, tmp / "images" / case.path.name)
    return tmp / "images" / case.path.name


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every file and folder under ``root`` with its mode and content."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() else None
        out[path.relative_to(root).as_posix()] = (st.st_mode, data)
    return out


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SOURCE_DATE_EPOCH", None)
    return subprocess.run(
        [sys.executable, "-m", "builder", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def run_all(cwd: Path, commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Run commands side by side: each must fail before writing, so they cannot disturb each other."""
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return list(pool.map(lambda argv: run(cwd, *argv), commands))


def assert_refused(case: Case, proc: subprocess.CompletedProcess[str], tmp: Path) -> None:
    command = " ".join(proc.args[3:])
    label = f"{case.name}: `{command}`"
    assert "Traceback" not in proc.stderr + proc.stdout, f"{label} printed a traceback"
    assert proc.returncode == 2, f"{label} exited {proc.returncode}: {proc.stderr}"
    assert proc.stdout == "", f"{label} printed on stdout: {proc.stdout!r}"
    # template errors name the resolved templates folder; compare relative to the project
    lines = proc.stderr.replace(f"{tmp}/", "").splitlines()
    assert lines, f"{label} printed nothing on stderr"
    error, extra = lines[0], lines[1:]
    assert error.startswith("breakglass: error: "), f"{label}: {error!r}"
    assert error.startswith(f"breakglass: error: {case.where}: "), (
        f"{label}: want location {case.where}, got {error!r}"
    )
    assert case.expect in error, f"{label}: want {case.expect!r} in {error!r}"
    assert "internal error" not in error
    if case.hint is None:
        assert extra == [], f"{label}: unexpected lines after the error: {extra}"
    else:
        assert len(extra) == 1, f"{label}: want exactly one hint line, got {extra}"
        assert extra[0].startswith("hint: ") and case.hint in extra[0], f"{label}: {extra}"


def spec_loads(spec: Path) -> bool:
    try:
        load_spec(spec)
    except InputError:
        return False
    return True


def test_case_folder_has_cases() -> None:
    assert len(CASES) >= 20, f"expected at least 20 cases in {CASES_DIR}, found {len(CASES)}"
    for path in CASES:
        read_case(path)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_bad_spec_is_refused_and_changes_nothing(path: Path, tmp_path: Path) -> None:
    case = read_case(path)
    tmp = tmp_path.resolve()
    spec = project(case, tmp)
    rel = spec.relative_to(tmp).as_posix()
    dist = tmp / "dist"
    build = ["build", rel, "--out", str(dist)]

    before = snapshot(tmp)
    if not spec_loads(spec):
        # schema errors: every command stops at the spec, seal before any credential exists
        results = run_all(tmp, [["lint", rel], build, ["seal", rel]])
    else:
        # template errors: seal must refuse before making credentials; then, with a bundle
        # present, lint and build must reach the renderer and refuse there
        results = run_all(tmp, [["seal", rel]])
        assert_refused(case, results[0], tmp)
        assert snapshot(tmp) == before, f"{case.name}: seal changed the tree"
        bundle, _ = seal_spec(load_spec(spec), NOW)
        spec.with_name("example.sealed.yaml").write_bytes(bundle.to_bytes())
        before = snapshot(tmp)
        results = run_all(tmp, [["lint", rel], build])
    for proc in results:
        assert_refused(case, proc, tmp)
    assert not dist.exists(), f"{case.name}: build created {dist}"
    assert snapshot(tmp) == before, f"{case.name}: the tree changed"


def test_read_case_rejects_a_case_without_expectation(tmp_path: Path) -> None:
    bad = tmp_path / "nameless.yaml"
    bad.write_text("# no expectation here\nname: example\n")
    with pytest.raises(AssertionError, match="expect"):
        read_case(bad)


def test_case_error_in_process() -> None:
    """The same expectations through ``load_spec`` itself, without a process per case."""
    for path in CASES:
        case = read_case(path)
        if "template" in case.name:
            continue  # the spec itself loads; the renderer refuses it
        tmp = Path(tempfile.mkdtemp(prefix="breakglass-case-"))
        try:
            spec = project(case, tmp)
            with pytest.raises(InputError) as err:
                load_spec(spec)
            message = err.value.message.replace(f"{tmp}/", "")
            assert message.startswith(f"{case.where}: "), (case.name, message)
            assert case.expect in message, (case.name, message)
            assert (err.value.hint is None) == (case.hint is None), (case.name, err.value.hint)
            if case.hint is not None:
                assert case.hint in str(err.value.hint), (case.name, err.value.hint)
        finally:
            shutil.rmtree(tmp)


def _manifest_policy(case_path: Path) -> dict[str, object]:
    """The quorum part of a case's policy in the manifest's form, read without validation."""
    from ruamel.yaml import YAML

    policy = YAML(typ="safe").load(case_path.read_text(encoding="utf-8"))["policy"]
    return {
        "group_threshold": policy.get("group_threshold", 1),
        "groups": [
            {"name": g["name"], "threshold": g["threshold"], "members": list(g["members"])}
            for g in policy["groups"]
        ],
        "allow_single_approver": bool(policy.get("allow_single_approver", False)),
    }


VERIFY_CASES = [p for p in CASES if read_case(p).verify]


def test_verify_cases_exist() -> None:
    assert VERIFY_CASES, "no case checks verify's policy rule (a '# verify:' header)"


@pytest.mark.parametrize("path", VERIFY_CASES, ids=[p.stem for p in VERIFY_CASES])
def test_verify_refuses_a_signed_manifest_with_the_case_policy(path: Path, tmp_path: Path) -> None:
    """A release key may sign anything: verify checks the policy itself, after the signature."""
    import json

    from builder.core import sshsig
    from tests import hostkit

    case = read_case(path)
    manifest = json.loads(
        (hostkit.shared_image().root / "etc/breakglass/manifest.json").read_bytes()
    )
    manifest["policy"].update(_manifest_policy(path))
    image = tmp_path / "image"
    image.mkdir()
    raw = dumps(manifest)
    (image / "breakglass-manifest.json").write_bytes(raw)
    key = tmp_path / "release"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    sig = sshsig.sign(raw, key, sshsig.MANIFEST_NAMESPACE)
    (image / "breakglass-manifest.json.sig").write_text(sig)
    pub = (tmp_path / "release.pub").read_text().split()
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'release namespaces="breakglass-manifest" {pub[0]} {pub[1]}\n')
    proc = run(tmp_path, "verify", str(image), "--allowed-signers", str(signers))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == f"breakglass: error: {case.verify}\n"
    # the same manifest with the image's own policy passes this check (and fails a later one)
    manifest["policy"] = json.loads(
        (hostkit.shared_image().root / "etc/breakglass/manifest.json").read_bytes()
    )["policy"]
    raw = dumps(manifest)
    (image / "breakglass-manifest.json").write_bytes(raw)
    (image / "breakglass-manifest.json.sig").write_text(
        sshsig.sign(raw, key, sshsig.MANIFEST_NAMESPACE)
    )
    proc = run(tmp_path, "verify", str(image), "--allowed-signers", str(signers))
    assert proc.returncode != 0 and str(case.verify) not in proc.stderr, proc.stderr


def test_accepted_cases_exist() -> None:
    assert ACCEPTED, f"no case in {CASES_DIR / 'accepted'}"


@pytest.mark.parametrize("path", ACCEPTED, ids=[p.stem for p in ACCEPTED])
def test_accepted_case_lints_builds_and_verifies(
    path: Path, tmp_path: Path, demo_keys: Path
) -> None:
    """A case that keeps the two-person rule: lint, seal, build and verify all pass."""
    from builder.approval.quorum import fewest

    header = {
        k: v.strip()
        for k, _, v in (
            line[1:].strip().partition(": ")
            for line in path.read_text().splitlines()
            if line.startswith("#")
        )
    }
    tmp = tmp_path.resolve()
    spec = project(Case(path.stem, path, "", "", None), tmp)
    rel = spec.relative_to(tmp).as_posix()
    loaded = load_spec(spec)
    assert fewest(
        loaded.policy.group_threshold, (g.threshold for g in loaded.policy.groups)
    ) == int(header["fewest"])
    lint = run(tmp, "lint", rel)
    assert lint.returncode == 0, lint.stderr
    bundle, _ = seal_spec(loaded, NOW)
    spec.with_name(f"{loaded.name}.sealed.yaml").write_bytes(bundle.to_bytes())
    build = run(tmp, "build", rel, "--out", "dist", "--sign-key", str(demo_keys / "release"))
    assert build.returncode == 0, build.stderr
    (image_dir,) = (tmp / "dist" / loaded.name).iterdir()
    verify = run(
        tmp, "verify", str(image_dir), "--allowed-signers", str(demo_keys / "allowed_signers")
    )
    assert verify.returncode == 0, verify.stderr
